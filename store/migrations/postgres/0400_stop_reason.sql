-- Why a recording stopped when it did not end with its call (recovered after a crash, cut by
-- a failed spool write, ...), with when: shown with the recording, NULL for an ordinary end.
ALTER TABLE recordings ADD COLUMN stop_reason TEXT;
