-- User names are unique regardless of case ("Alice" and "alice" are one name). Where accounts
-- already differ only by case, the oldest keeps its name and each later one is renamed
-- "<name>~<first 8 hex digits of its id>", with an entry in the activity log naming both, so
-- nothing is lost and an admin sees what changed.
WITH renamed AS (
    UPDATE users u SET username = u.username || '~' || left(replace(u.id::text, '-', ''), 8)
    WHERE EXISTS (
        SELECT 1 FROM users o
        WHERE o.tenant = u.tenant AND LOWER(o.username) = LOWER(u.username)
          AND (o.created_at, o.id::text) < (u.created_at, u.id::text))
    RETURNING u.tenant, u.username
)
INSERT INTO activity_log (tenant, time, kind, message)
SELECT tenant, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT), 'directory',
       'user names are unique regardless of case: an account was renamed to ' || username
       || ': its name ' || left(username, length(username) - 9) || ' differed only by case from an older account''s'
FROM renamed;

CREATE UNIQUE INDEX users_username_folded ON users (tenant, LOWER(username));
