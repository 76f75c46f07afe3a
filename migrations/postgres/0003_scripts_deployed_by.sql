-- Who deployed a script's current code (SPEC 14: a principal never acts
-- with rights it does not have, including through a script someone else
-- registered). A script's host calls need the rights of the principal it
-- runs as and of this one. Null: deployed by the operator or the
-- embedding application, as every script deployed before this migration.
alter table scripts add column deployed_by text;
