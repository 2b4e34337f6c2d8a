-- Each tenant's note_sequence row starts at its largest note id. 20261210000100 made a tenant's row
-- only at its next note, from the notes left by then: the ids of notes deleted in between would
-- have been handed out again (to a client holding a cursor or an id, a different note).
insert or ignore into note_sequence (client_key, last_id)
select client_key, max(id) from note group by client_key;
