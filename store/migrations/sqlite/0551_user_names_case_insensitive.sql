-- User names are unique regardless of case ("Alice" and "alice" are one name). Where accounts
-- already differ only by case, the oldest keeps its name and each later one is renamed
-- "<name>~<first 8 hex digits of its id>", with an entry in the activity log naming both, so
-- nothing is lost and an admin sees what changed. (SQLite's LOWER folds ASCII letters only.)
CREATE TEMP TABLE user_name_clashes AS
SELECT u.tenant, u.id, u.username AS old_name,
       u.username || '~' || lower(hex(substr(u.id, 1, 4))) AS new_name
FROM users u
WHERE EXISTS (
    SELECT 1 FROM users o
    WHERE o.tenant = u.tenant AND LOWER(o.username) = LOWER(u.username)
      AND (o.created_at, o.id) < (u.created_at, u.id));

INSERT INTO activity_log (tenant, time, kind, message)
SELECT tenant, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER), 'directory',
       'user names are unique regardless of case: an account was renamed to ' || new_name
       || ': its name ' || old_name || ' differed only by case from an older account''s'
FROM user_name_clashes;

UPDATE users SET username = (
    SELECT c.new_name FROM user_name_clashes c WHERE c.tenant = users.tenant AND c.id = users.id)
WHERE EXISTS (
    SELECT 1 FROM user_name_clashes c WHERE c.tenant = users.tenant AND c.id = users.id);

DROP TABLE user_name_clashes;

CREATE UNIQUE INDEX users_username_folded ON users (tenant, LOWER(username));
