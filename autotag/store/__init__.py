"""The SQLite state: which file versions were seen, what became of them, and their embeddings.

One class a job, each over the same per-thread connection (connection.py), with its own SQL;
`Store` is all of them over one file, what callers open:

    schema.py      tables, triggers, migrations (SCHEMA_VERSION)
    connection.py  state.path → a connection per thread; StoreError
    records.py     FileRecord, Version, Event: the values handed out
    files.py       Files: files and roots (record_tagged, record_failure, versions, ...)
    embeddings.py  Embeddings: clips and thumbs (save_embedded, load_embedded, ...)
    background.py  Background: the library's mean, and the background last fitted
    clips.py       ClipRows: records + clip embeddings for search and retag
    reviews.py     Reviews, and ChangeFeed (what changed since a seq)
    outbox.py      Outbox: MQTT events and discovery topics

The tables:

    files: id, path → size, mtime, sha256, status (tagged | failed), attempts, last error,
           model and vocabulary fingerprints of the tags last written, the st_mtime_ns of the
           JSON sidecar written with them (so the up-to-date rule stats it instead of reading
           it: a million unchanged files checked with no file opened), and the digest of the
           output settings they were written with (passes.outputs_digest: an output switched
           on later, or new thresholds, make the clip stale by a comparison). The id is what the web
           app addresses a clip by (never a path in a URL): it stays while the path is known
           (re-tagging keeps it) and is never given to another file (AUTOINCREMENT)
    changes: seq → file id, one row per insert, update or delete of a file or of its content's
             embeddings (triggers), so a reader in any process (the web app's index) follows
             the store by asking for what changed since the last seq it saw
    vectors: (sha256, model) → the clip embedding alone, a copy of clips.clip_embedding kept by
             a trigger: a scan for search reads 2 KB a clip here, where in clips it would walk
             past each clip's window embeddings (16 KB of overflow pages) to reach it
    reviews: (sha256, label) → confirmed | rejected: a person's word on a tag, by content (it
             follows renames and copies) and by label (it outlives a vocabulary change)
    roots: the folders (or files) autotag was pointed at; the web app serves only files
           whose real path lies inside one of them
    clips: (sha256, model) → duration, windows, window embeddings, clip embedding
    thumbs: sha256 → a JPEG strip of the clip's thumbnails (previews and contact sheets without
            decoding)
    background: model → the count and sum of every stored clip embedding (one per content),
                kept as clips are saved, so the library's mean is read, never recomputed; and
                the background a tag from examples was last fitted against (issue 31: its
                mean then and a sample of clip embeddings, kept until the library has grown
                or shrunk by a quarter, so a new clip does not re-tag the library)
    outbox: seq → event id, kind, payload JSON, created, sent: the events MQTT delivers
            (autotag/mqtt.py), written in the same transaction as the clip's record, so an
            event is never lost with the broker away nor sent for a record that was not written
    mqtt_entities: the Home Assistant discovery topics announced, to remove what is gone

Embeddings are stored per content hash, so a copy or a rename is tagged without the model, and
search and retag read them back without decoding a frame. WAL mode lets `autotag search` read
while the daemon writes. Connections are per thread (sqlite3 objects must not cross threads).
"""

from __future__ import annotations

from autotag.store.background import Background
from autotag.store.clips import ClipRows
from autotag.store.connection import DAMAGED, LOOKUP_CHUNK, Connection, StoreError, damaged
from autotag.store.embeddings import Embeddings
from autotag.store.file_rows import Files
from autotag.store.outbox import OUTBOX_KEPT_SECONDS, Outbox
from autotag.store.records import Event, FileRecord, Version, record_of
from autotag.store.review_rows import ChangeFeed, Reviews
from autotag.store.schema import CHANGES_KEPT, SCHEMA_VERSION

__all__ = ["CHANGES_KEPT", "DAMAGED", "LOOKUP_CHUNK", "OUTBOX_KEPT_SECONDS", "SCHEMA_VERSION",
           "Event", "FileRecord", "Store", "StoreError", "Version", "damaged", "record_of"]


class Store(Files, Embeddings, Background, ClipRows, Reviews, ChangeFeed, Outbox, Connection):
    """The state store at `path`: every part over one connection per thread. A caller that
    needs one part only may open that class alone (each is a Connection)."""
