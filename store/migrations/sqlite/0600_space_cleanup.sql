-- Space-based cleanup walks a storage target's recordings oldest first.
CREATE INDEX recordings_target_start ON recordings (tenant, storage_target, start_time, id) WHERE status <> 'deleted';
