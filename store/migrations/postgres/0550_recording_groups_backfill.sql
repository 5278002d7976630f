-- Recordings made before the groups of a call's parties were captured get them now: the groups
-- of the owner and of every user whose number was a party (calling, called, answering or a
-- listed participant). The memberships of the call's day are not known any more, so this uses
-- today's; every recording made from now on keeps the memberships of its own start.
WITH parties AS (
    SELECT r.tenant, r.id, r.owner_user_id AS user_id
    FROM recordings r WHERE r.owner_user_id IS NOT NULL
    UNION
    SELECT r.tenant, r.id, e.user_id
    FROM recordings r JOIN extensions e ON e.tenant = r.tenant
        AND e.number IN (r.calling_number, r.called_number, r.answering_number)
    UNION
    SELECT r.tenant, r.id, e.user_id
    FROM recordings r
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(r.participants::jsonb) = 'array' THEN r.participants::jsonb
             ELSE '[]'::jsonb END) AS p(party)
    JOIN extensions e ON e.tenant = r.tenant AND e.number = p.party ->> 'number'
)
INSERT INTO recording_groups (tenant, recording_id, group_id)
SELECT DISTINCT p.tenant, p.id, m.group_id
FROM parties p JOIN memberships m ON m.tenant = p.tenant AND m.user_id = p.user_id
ON CONFLICT DO NOTHING;
