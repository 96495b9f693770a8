"""`retrain-edge review`: label photos in a local page by moving files between ordinary class folders.

SOURCE is a folder of class folders (edge-classify's --save_uncertain or --collect output). Each
photo is moved, under its own name, into DATA/<class>/, or discarded into
SOURCE/.discarded/<its folder>/. Nothing is deleted, nothing is overwritten:
- every action is appended to SOURCE/.review/journal.jsonl and fsync'd before its renames, so the
  journal always knows at least what the files show, and a `done` line follows its renames; at
  start, the renames of a last action without one, which a crash cut short, are finished (the
  person asked for them), so journal and files agree again;
- one review at a time works on SOURCE and one on DATA (a lock in each one's .review/), so two
  reviews never pick the same free name; --read_only writes nothing and takes no lock;
- a photo moves by one rename within one file system, so it is whole in one place or the other;
- a name already taken in the destination gets a suffix that the split ignores (after `_nohash_`),
  so the photo stays in the set its name puts it in, and so does the rest of its burst.
Undo appends the reverse moves: it is journalled and recovered like any action.

With --audit, SOURCE and DATA are the image_dir of `retrain-edge audit`, and the photos listed
are those it flagged as likely mislabelled (from its audit.json).

This module needs no TensorFlow: `review` starts in the time Pillow takes to import.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from edge.collect import UNCERTAIN_SIDECAR, folder_for_label
from trainer import UserError
from trainer.dataset import is_image_file_name, label_for_folder
from trainer.outputs import AUDIT_JSON, write_bytes_atomic

logger = logging.getLogger(__name__)

STATE_FOLDER = ".review"  # in SOURCE: the journal; hidden, so no dataset reads it as a class
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "lock"  # in SOURCE/.review/ and DATA/.review/: held while a review moves photos there
DISCARDED_FOLDER = ".discarded"  # in SOURCE
THUMBNAIL_SIZE = 160  # px, the longer side: a grid cell on a laptop screen, ~6 KB as JPEG
THUMBNAIL_QUALITY = 80  # Pillow's 0-100 scale
NOHASH = "_nohash_"  # the split hashes a file name without what follows this (trainer.dataset)


DEFAULT_REVIEW_ADDRESS = "127.0.0.1:8780"  # 127.0.0.1: this machine only


def lock_exclusively(file, busy: str) -> None:
    """Hold an exclusive lock on the open `file` until it is closed; UserError `busy` when another holds it."""
    try:
        import fcntl  # POSIX only; Windows has no flock
    except ImportError:
        file.close()
        raise UserError("review needs Linux or macOS (it locks its folders with flock)") from None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.close()
        raise UserError(busy) from None


def default_thumbnail_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "retrain-edge" / "thumbnails"


@dataclass
class ReviewOptions:
    """What `retrain-edge review` does; each field is one flag."""

    source: Path | None = None  # folder of class folders to review; None with audit
    into: Path | None = None  # DATA: where labelled photos go, DATA/<class>/ (with audit: its image_dir)
    audit: Path | None = None  # --audit: the report_dir of `retrain-edge audit`, holding audit.json
    serve: str = DEFAULT_REVIEW_ADDRESS  # [HOST:]PORT of the page
    read_only: bool = False  # show the page; refuse every change
    thumbnail_dir: Path = field(default_factory=default_thumbnail_dir)


@dataclass
class Photo:
    """One photo of the listing; its id is its index in the listing, the only way a request names it."""

    origin: Path  # where the listing found it before any review moved it
    path: Path  # where it is now
    group: str  # the predicted label it is shown under
    scores: list[tuple[str, float]]  # (label, score), best first; empty when nothing scored it
    labelled: str | None = None  # --audit: the class it was in when audit flagged it
    record: dict | None = None  # its uncertain.jsonl line, which follows the file
    record_position: int = 0  # where that line was, among both folders' lines: it goes back there


@dataclass
class ReviewSummary:
    """What a review did to the files during this run, printed at its end."""

    data: Path
    discarded_folder: Path
    moved: dict[str, int]  # class folder -> photos moved into it
    discarded: int
    left: int  # photos listed and still where the listing found them

    def __str__(self) -> str:
        moved = sum(self.moved.values())
        per_class = ", ".join(f"{name} {count}" for name, count in sorted(self.moved.items()))
        lines = [f"moved {moved} photo{'s' * (moved != 1)} into {self.data}" + (f" ({per_class})" if per_class else ""),
                 f"discarded {self.discarded} into {self.discarded_folder}",
                 f"{self.left} left as they were"]
        if moved:
            lines.append(f"next: retrain-edge train --image_dir {self.data}")
        return "\n".join(lines)


def free_name(folder: Path, name: str, taken: set[Path] = frozenset()) -> Path:
    """folder/name, or when that is taken (on disk or in `taken`) a name the split hashes the same.

    The split hashes the name without any `_nohash_...` part, so `b_nohash_3.jpg` becomes
    `b_nohash_3-2.jpg` and `photo.jpg` becomes `photo.jpg_nohash_2.jpg`: both keep their set.
    """
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    number = 2
    while candidate in taken or os.path.lexists(candidate):
        candidate = folder / (f"{stem}-{number}{suffix}" if NOHASH in stem else f"{name}{NOHASH}{number}{suffix}")
        number += 1
    return candidate


def thumbnail(path: Path, cache_folder: Path) -> bytes:
    """A JPEG of `path` at most THUMBNAIL_SIZE px, made once and cached.

    The cache key is the file's device, inode, size and modification time, which a rename keeps: a
    photo moved into a class folder keeps its thumbnail, and two photos of one name do not share one.
    """
    status = path.stat()
    key = hashlib.sha1(f"{status.st_dev}\0{status.st_ino}\0{status.st_size}\0{status.st_mtime_ns}".encode())
    cached = cache_folder / key.hexdigest()[:2] / f"{key.hexdigest()}.jpg"
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    with Image.open(path) as image:
        # A JPEG decodes at 1/2 to 1/8 scale, several times faster, down to the thumbnail's own size.
        scale = min(1.0, THUMBNAIL_SIZE / max(image.size))
        image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        jpeg = io.BytesIO()
        image.save(jpeg, "JPEG", quality=THUMBNAIL_QUALITY)
    try:
        write_bytes_atomic(cached, jpeg.getvalue())
    except UserError as error:  # a cache it cannot fill costs time, not the thumbnail
        logger.info(str(error))
    return jpeg.getvalue()


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file, none when it is absent; a line cut short by a crash is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def class_folder_images(folder: Path) -> list[Path]:
    """The images of folder's visible sub-folders, in name order."""
    images = []
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name) if folder.is_dir() else ():
        if entry.is_dir() and not entry.name.startswith("."):
            images.extend(Path(entry.path) / name for name in sorted(os.listdir(entry.path)) if is_image_file_name(name))
    return images


class ReviewSession:
    """The listing, its journal and the moves; every method is safe to call from several threads."""

    def __init__(self, options: ReviewOptions):
        self.lock = threading.RLock()
        self.audit = options.audit is not None
        self.read_only = options.read_only
        audit_entries = self._resolve_folders(options)
        self.discarded_folder = self.source / DISCARDED_FOLDER
        self.discarded_prefix, self.data_string = str(self.discarded_folder) + os.sep, str(self.data)
        self.thumbnail_dir = Path(options.thumbnail_dir).expanduser()
        self.steps: list[dict] = []  # the journal's lines, in order
        self.version = 0  # changes made by this run; the page asks for those after the version it has
        self.changed_at: dict[int, int] = {}  # photo id -> version of its last change
        self.stopped: str | None = "this review is read-only" if self.read_only else None  # why no action is taken
        self.journal, self.locks = None, []
        if self.read_only:
            self.steps = self._parse_journal(self._read_journal())
        else:
            self._open_and_lock()
            self._recover()
        self.photos = self._list(audit_entries)
        self._attach_records()
        self.ids = {photo.path: index for index, photo in enumerate(self.photos)}
        # Each photo's entry in the listing, as JSON, remade only when it moves: the listing of 10,000
        # photos is then one join, where building it took most of the first screen's time.
        self.photo_json = [self._photo_json(photo_id) for photo_id in range(len(self.photos))]
        self.started_at = [photo.path for photo in self.photos]
        self.initial_classes = set(self._class_names())
        # Typed in the page, with no folder yet. A new dataset starts with the labels the photos are grouped
        # by, which are the model's: its classes, most likely.
        self.created_classes: list[str] = []
        for group in [] if self.initial_classes else sorted({photo.group for photo in self.photos}):
            with contextlib.suppress(UserError):  # a label of dots alone names no folder
                self.created_classes.append(folder_for_label(group))
        self.created_classes = list(dict.fromkeys(self.created_classes))
        if not self.read_only:
            self.sync_sidecars()

    def _open_and_lock(self) -> None:
        """Lock SOURCE/.review/lock and DATA/.review/lock (one review per folder), then open the journal."""
        self.locks = []
        for root in dict.fromkeys((self.source, self.data)):
            state = root / STATE_FOLDER
            try:
                state.mkdir(exist_ok=True)
                file = open(state / LOCK_FILE, "a", encoding="utf-8")
            except OSError as error:
                self.close()
                raise UserError(f"cannot write the review state in {state}: {error.strerror or error}") from None
            try:
                lock_exclusively(file, f"another `retrain-edge review` is moving photos in {root}; close it first")
            except UserError:
                self.close()
                raise
            self.locks.append(file)
        try:
            self.journal = open(self.source / STATE_FOLDER / JOURNAL_FILE, "a+", encoding="utf-8")
        except OSError as error:
            self.close()
            raise UserError(f"cannot write the review journal in {self.source / STATE_FOLDER}: "
                            f"{error.strerror or error}") from None

    # --- start: folders, recovery, listing ---

    def _resolve_folders(self, options: ReviewOptions) -> list[dict]:
        """Set source and data; returns audit's flagged photos (none without --audit)."""
        entries = []
        if options.audit is not None:
            report = Path(options.audit).expanduser() / AUDIT_JSON
            try:
                audit = json.loads(report.read_text(encoding="utf-8"))
                image_dir, entries = Path(audit["image_dir"]), audit["suspected_mislabels"]
            except FileNotFoundError:
                raise UserError(f"--audit {options.audit} has no {AUDIT_JSON}: run retrain-edge audit "
                                f"--report_dir {options.audit} first") from None
            except (OSError, ValueError, KeyError, TypeError) as error:
                detail = error.strerror if isinstance(error, OSError) else "not what retrain-edge audit writes"
                raise UserError(f"cannot read {report} ({detail}): run retrain-edge audit --report_dir "
                                f"{options.audit} again") from None
            if options.source is not None and Path(options.source).expanduser().resolve() != image_dir:
                raise UserError(f"--audit reviews the photos of {image_dir} in place; leave out SOURCE")
            if options.into is not None and Path(options.into).expanduser().resolve() != image_dir:
                raise UserError(f"--audit moves photos between the class folders of {image_dir}; leave out --into")
            options_source = options_data = image_dir
        else:
            if options.source is None or options.into is None:
                raise UserError("give SOURCE and --into DATA (or --audit DIR)")
            options_source, options_data = Path(options.source).expanduser(), Path(options.into).expanduser()
        if not options_source.is_dir():
            raise UserError(f"{options_source} is not a folder of class folders")
        self.source = options_source.resolve()
        if not options.read_only:
            try:
                options_data.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"cannot create {options_data}: {error.strerror or error}") from None
        self.data = options_data.resolve()
        if self.data.exists() and self.source.stat().st_dev != self.data.stat().st_dev:
            raise UserError(f"{self.source} and {self.data} are on different file systems; a photo moves by an "
                            "atomic rename, which needs one: copy SOURCE next to DATA first")
        return entries

    def _location(self, path: Path) -> str:
        """How the journal names a path: relative to SOURCE, so the two folders can move together."""
        return Path(os.path.relpath(path, self.source)).as_posix()

    def _path(self, location: str) -> Path:
        """The path a journal location names ("../data/roses/x.jpg" from SOURCE: DATA/roses/x.jpg)."""
        return Path(os.path.normpath(self.source / location))

    def _read_journal(self) -> str:
        """The journal's text, read without opening it for writing (--read_only); none when there is none yet."""
        try:
            return (self.source / STATE_FOLDER / JOURNAL_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except OSError as error:
            raise UserError(f"cannot read the review journal in {self.source / STATE_FOLDER}: "
                            f"{error.strerror or error}") from None

    def _parse_journal(self, text: str) -> list[dict]:
        """The journal's lines; a last line cut short by a crash was never acted on and is left out."""
        text = text[:text.rfind("\n") + 1]
        try:
            return [json.loads(line) for line in text.splitlines()]
        except json.JSONDecodeError as error:
            raise UserError(f"the review journal in {self.source / STATE_FOLDER} is damaged ({error}); only its last "
                            "line can be cut short by a crash, so it was edited: mend or remove that line") from None

    def _recover(self) -> None:
        """Read the journal; finish the renames of the last action if a crash cut it short (it has no `done`)."""
        self.journal.seek(0)
        text = self.journal.read()
        if text and not text.endswith("\n"):  # a line cut short was never acted on: its renames come after it
            self.journal.truncate(text.rfind("\n") + 1)
        self.steps = self._parse_journal(text)
        if not self.steps:
            return
        last = self.steps[-1]["action"]
        # Journals before `done` lines have none: their last action is finished as it always was.
        if any(step.get("done") for step in self.steps if step["action"] == last):
            return
        finished = 0
        for step in self._moves_of(last):
            origin, target = self._path(step["from"]), self._path(step["to"])
            if os.path.lexists(origin) and not os.path.lexists(target):
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(origin, target)
                except OSError as error:
                    raise UserError(f"cannot finish the journalled move of {origin} to {target}: "
                                    f"{error.strerror or error}") from None
                finished += 1
        if finished:
            logger.warning(f"finished {finished} move{'s' * (finished != 1)} of the last action, which a stopped "
                           f"review had journalled but not done")
        self._journal([{"action": last, "done": True}])

    def _list(self, audit_entries: list[dict]) -> list[Photo]:
        """The photos to review, where they are now, grouped by predicted label, worst score first."""
        now_of = {self._path(step["origin"]): self._path(step["to"]) for step in self.steps if "to" in step}
        photos = []
        if self.audit:
            for entry in audit_entries:
                origin = self.data / entry["path"]
                path = now_of.get(origin, origin)
                if path.exists():
                    photos.append(Photo(origin, path, entry["predicted"], [(entry["predicted"], entry["confidence"])],
                                        labelled=entry["label"]))
        else:
            seen = set()
            for origin, path in now_of.items():
                if origin.parent.parent == self.source and not origin.parent.name.startswith(".") and path.exists():
                    photos.append(Photo(origin, path, origin.parent.name, []))
                    seen.add(path)
            photos.extend(Photo(path, path, path.parent.name, []) for path in class_folder_images(self.source)
                          if path not in seen)
        return photos

    def _attach_records(self) -> None:
        """Give each photo its uncertain.jsonl line (scores, group), wherever an earlier run left it."""
        by_path = {photo.path: photo for photo in self.photos}
        by_origin = {photo.origin: photo for photo in self.photos}
        # sidecar -> (position, line) of the files not in the listing; positions keep the lines' order
        self.other_records: dict[Path, list[tuple[int, dict]]] = {}
        position = 0
        for root in dict.fromkeys((self.source, self.data)):
            sidecar = root / UNCERTAIN_SIDECAR
            self.other_records[sidecar] = []
            for record in read_jsonl(sidecar):
                position += 1
                path = root / str(record.get("file", ""))
                photo = by_path.get(path) or by_origin.get(path)
                if photo is None or photo.record is not None:
                    self.other_records[sidecar].append((position, record))
                    continue
                photo.record, photo.record_position = record, position
                top = [(entry["label"], float(entry["score"])) for entry in record.get("top_k", [])
                       if isinstance(entry, dict) and "label" in entry and "score" in entry]
                if top and not self.audit:
                    photo.scores, photo.group = top, top[0][0]
        self.photos.sort(key=lambda photo: (photo.group, self._sort_score(photo), photo.origin.name))

    def _sort_score(self, photo: Photo) -> float:
        """Worst first: the lowest top score of an unsure frame; the most confident other class of an audit flag."""
        if not photo.scores:
            return float("inf")
        return -photo.scores[0][1] if self.audit else photo.scores[0][1]

    # --- the files ---

    def sidecar_of(self, path: Path) -> Path:
        in_data = path.is_relative_to(self.data) and not path.is_relative_to(self.discarded_folder)
        return (self.data if in_data else self.source) / UNCERTAIN_SIDECAR

    def sync_sidecars(self) -> None:
        """Rewrite uncertain.jsonl in SOURCE and DATA so each listed photo's line is beside its file.

        Derived from where the files are, so running it again after a crash repairs what a crash left.
        """
        lines = {sidecar: list(records) for sidecar, records in self.other_records.items()}
        for photo in self.photos:
            if photo.record is not None:
                sidecar = self.sidecar_of(photo.path)
                lines[sidecar].append((photo.record_position,
                                       {**photo.record, "file": photo.path.relative_to(sidecar.parent).as_posix()}))
        for sidecar, sidecar_lines in lines.items():
            text = "".join(json.dumps(record) + "\n" for _, record in sorted(sidecar_lines, key=lambda line: line[0]))
            current = sidecar.read_text(encoding="utf-8") if sidecar.exists() else ""
            if text == current:
                continue
            if text:
                write_bytes_atomic(sidecar, text.encode("utf-8"))
            else:  # every photo it listed went to the other folder, and so did its line
                sidecar.unlink()

    def _class_names(self) -> list[str]:
        if not self.data.is_dir():  # --read_only into a DATA not made yet
            return []
        return sorted(entry.name for entry in os.scandir(self.data) if entry.is_dir() and not entry.name.startswith("."))

    def classes(self) -> list[dict]:
        """DATA's class folders, then the classes typed in the page in their order (keys stay put), with image counts."""
        names = [name for name in self._class_names() if name not in self.created_classes] + self.created_classes
        return [{"name": name, "count": sum(1 for file_name in os.listdir(self.data / name) if is_image_file_name(file_name))
                 if (self.data / name).is_dir() else 0} for name in names]

    def status(self, photo_id: int) -> dict:
        # On strings: pathlib's comparisons are slow enough to count in a 10,000-photo listing.
        path = str(self.photos[photo_id].path)
        discarded = path.startswith(self.discarded_prefix)
        folder, _ = os.path.split(path)
        in_class = not discarded and os.path.dirname(folder) == self.data_string
        return {"id": photo_id, "class": os.path.basename(folder) if in_class else None, "discarded": discarded,
                "moved": path != str(self.photos[photo_id].origin)}

    def _photo_json(self, photo_id: int) -> str:
        photo = self.photos[photo_id]
        return json.dumps({"name": photo.origin.name, "group": photo.group, "labelled": photo.labelled,
                           "scores": [[label, round(score, 4)] for label, score in photo.scores[:3]],
                           **self.status(photo_id)})

    def listing(self) -> str:
        """The listing as JSON: {"photos": [{id, name, group, labelled, scores, class, discarded, moved}],
        "version", "classes", "undoable"}; a photo's id is its index."""
        with self.lock:
            rest = json.dumps({"version": self.version, "classes": self.classes(), "undoable": self.undoable()})
            return '{"photos":[' + ",".join(self.photo_json) + "]," + rest[1:]

    def changes(self, since: int) -> dict:
        """The state of every photo changed after version `since`, the class counts and the version."""
        with self.lock:
            return {"version": self.version, "classes": self.classes(), "undoable": self.undoable(),
                    "changes": [self.status(photo_id) for photo_id, version in self.changed_at.items() if version > since]}

    def add_class(self, name: str) -> str:
        """A class typed in the page; its folder is made when a photo goes in (an empty class folder stops train)."""
        if self.read_only:
            raise UserError(self.stopped)
        folder = folder_for_label(name)
        label = label_for_folder(folder)
        if folder != name.strip() or folder.startswith(".") or not label:
            raise UserError(f"{name!r} is not a class folder name: use letters, digits, spaces, '-' or '_'")
        with self.lock:
            same = [other for other in self._class_names() + self.created_classes
                    if other != folder and label_for_folder(other) == label]
            if same:  # train would refuse a dataset with two folders of one label
                raise UserError(f"{name!r} is the class {same[0]!r} to train; use that one")
            if folder not in self.created_classes:
                self.created_classes.append(folder)
        return folder

    def assign(self, ids: list[int], class_name: str) -> dict:
        """Move the photos into DATA/<class_name>/ (the class must exist or be added first)."""
        with self.lock:
            if class_name not in self._class_names() and class_name not in self.created_classes:
                raise UserError(f"no class {class_name!r}")
            folder = self.data / class_name
            return self._move([(photo_id, folder / self.photos[photo_id].path.name) for photo_id in ids
                               if self.photos[photo_id].path.parent != folder], "assign")

    def discard(self, ids: list[int]) -> dict:
        """Move the photos into SOURCE/.discarded/<the folder the listing found them in>/."""
        with self.lock:
            moves = []
            for photo_id in ids:
                photo = self.photos[photo_id]
                if not photo.path.is_relative_to(self.discarded_folder):
                    moves.append((photo_id, self.discarded_folder / photo.origin.parent.name / photo.path.name))
            return self._move(moves, "discard")

    def undoable(self) -> int:
        """How many actions undo can take back, most recent first."""
        return len(self._undo_stack())

    def _undo_stack(self) -> list[int]:
        """The actions not taken back that moved a photo of this listing to where it still is: an action whose
        photos are no longer listed (audit ran again, say) has nothing undo could show."""
        undone = {step["undoes"] for step in self.steps if "undoes" in step}
        listed = {step["action"] for step in self.steps if "to" in step and "undoes" not in step
                  and self._path(step["to"]) in self.ids}
        return [action for action in dict.fromkeys(step["action"] for step in self.steps if "to" in step)
                if action in listed and action not in undone]

    def undo(self) -> dict:
        """Take back the last action not yet taken back: its moves in reverse order."""
        with self.lock:
            stack = self._undo_stack()
            if not stack:
                raise UserError("nothing to undo" if not self.read_only else self.stopped)
            action = stack[-1]
            moves = []
            for step in reversed(self._moves_of(action)):
                photo_id = self.ids.get(self._path(step["to"]))
                if photo_id is not None:
                    moves.append((photo_id, self._path(step["from"])))
            return self._move(moves, "undo", undoes=action)

    def _moves_of(self, action: int) -> list[dict]:
        """The journalled moves of one action (its `done` line has none, nor has an undo that an earlier
        version journalled with nothing to move)."""
        return [step for step in self.steps if step["action"] == action and "to" in step]

    def _move(self, moves: list[tuple[int, Path]], kind: str, undoes: int | None = None) -> dict:
        """Journal the moves (photo id, wanted path), fsync, then rename; returns the changes."""
        if self.stopped:
            raise UserError(self.stopped)
        action = max((step["action"] for step in self.steps), default=0) + 1
        taken: set[Path] = set()
        steps = []
        for photo_id, wanted in moves:
            photo = self.photos[photo_id]
            target = free_name(wanted.parent, wanted.name, taken)
            taken.add(target)
            step = {"action": action, "kind": kind, "from": self._location(photo.path), "to": self._location(target),
                    "origin": self._location(photo.origin)}
            if undoes is not None:
                step["undoes"] = undoes
            steps.append((photo_id, target, step))
        self._journal([step for _, _, step in steps])
        since = self.version
        self.version += 1
        for photo_id, target, _ in steps:
            photo = self.photos[photo_id]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(photo.path, target)
            except OSError as error:
                # The journal has this move: only a restart's recovery, which finishes the last action's
                # moves, may act after it, or journal and files would part.
                self.stopped = (f"cannot move {photo.path} to {target}: {error.strerror or error}; "
                                "fix that and start review again, which finishes the move")
                raise UserError(self.stopped) from None
            del self.ids[photo.path]
            photo.path = target
            self.ids[target] = photo_id
            self.photo_json[photo_id] = self._photo_json(photo_id)
            self.changed_at[photo_id] = self.version
        if steps:
            self._journal([{"action": action, "done": True}])
        if kind == "undo":
            for folder in {(self._path(step["to"])).parent for step in self._moves_of(undoes)}:
                if folder.parent == self.data and folder.name not in self.initial_classes:
                    try:
                        folder.rmdir()  # a class this review made and now emptied: train refuses empty folders
                    except OSError:
                        pass
        self.sync_sidecars()
        return self.changes(since)

    def _journal(self, lines: list[dict]) -> None:
        """Append the lines to the journal and fsync: they are on disk before anything they describe is done."""
        if not lines:
            return
        try:
            self.journal.write("".join(json.dumps(line) + "\n" for line in lines))
            self.journal.flush()
            os.fsync(self.journal.fileno())
        except OSError as error:
            self.stopped = f"cannot write the review journal {self.journal.name}: {error.strerror or error}"
            raise UserError(self.stopped) from None
        self.steps.extend(lines)

    def summary(self) -> ReviewSummary:
        with self.lock:
            moved, discarded, left = Counter(), 0, 0
            for photo, start in zip(self.photos, self.started_at):
                status = self.status(self.ids[photo.path])
                if photo.path == start:
                    left += photo.path == photo.origin
                elif status["discarded"]:
                    discarded += 1
                elif status["class"] is not None:
                    moved[status["class"]] += 1
            return ReviewSummary(self.data, self.discarded_folder, dict(moved), discarded, left)

    def close(self) -> None:
        for file in [self.journal, *self.locks]:
            if file is not None:
                file.close()  # and with it its lock

    def __enter__(self) -> ReviewSession:
        return self

    def __exit__(self, *exception) -> None:
        self.close()
