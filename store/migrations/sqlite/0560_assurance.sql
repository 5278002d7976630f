-- Recording assurance: a test call placed on schedule through a profile's own SIP entry point.
-- Its recordings are hidden from the Interactions list and search (admins find them with an
-- explicit filter) and expire on the assurance's own short retention.
ALTER TABLE recordings ADD COLUMN assurance BOOLEAN NOT NULL DEFAULT FALSE;
