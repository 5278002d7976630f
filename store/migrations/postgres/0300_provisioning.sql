-- Users an identity provider deleted (SCIM DELETE). The account stays, disabled, so that its
-- calls, notes and audit entries stay attributable; provisioning no longer sees it.
CREATE TABLE deprovisioned_users (
    tenant  TEXT   NOT NULL,
    user_id UUID   NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
