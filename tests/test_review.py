"""`retrain-edge review`: the moves, journal and recovery; the page over real HTTP and in a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TEST_TIMEOUT_S, load_script
from typer.testing import CliRunner

from edge.collect import UNCERTAIN_SIDECAR
from trainer import UserError
from trainer.cli import app
from trainer.dataset import hash_percentage, list_images
from trainer.review import DISCARDED_FOLDER, JOURNAL_FILE, STATE_FOLDER, ReviewOptions, ReviewSession, free_name
from trainer.review_page import TOKEN_HEADER, ReviewServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CLASSES = ("daisy", "roses", "tulips")
FRAME_SIZE = (48, 64)  # (height, width) px: small, decodes fast
bench_review = load_script("bench_review")


def make_folders(tmp_path: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    """SOURCE: `count` frames as --save_uncertain writes them; DATA: one photo per class of CLASSES."""
    source = bench_review.make_uncertain_folder(tmp_path / "uncertain", count, seed, CLASSES, FRAME_SIZE)
    data = tmp_path / "data"
    for index, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        shutil.copyfile(next(source.glob("*/*.jpg")), data / name / f"existing_{index}.jpg")
    return source, data


def session_of(source: Path, data: Path, tmp_path: Path) -> ReviewSession:
    return ReviewSession(ReviewOptions(source, data, thumbnail_dir=tmp_path / "thumbnails"))


def tree(*roots: Path) -> dict[str, bytes]:
    """Every file under the roots (review's own state aside: journal, locks) -> its bytes."""
    return {str(path): path.read_bytes() for root in roots for path in sorted(root.rglob("*"))
            if path.is_file() and STATE_FOLDER not in path.relative_to(root).parts}


def sidecar_files(root: Path) -> list[str]:
    """The files root/uncertain.jsonl has a line for, in its order; none when it is absent."""
    sidecar = root / UNCERTAIN_SIDECAR
    return [json.loads(line)["file"] for line in sidecar.read_text().splitlines()] if sidecar.exists() else []


def test_a_taken_name_gets_one_the_split_hashes_the_same(tmp_path):
    for name in ("20261129-081502-3fa2_nohash_0003.jpg", "IMG_1234.JPG"):
        (tmp_path / name).write_bytes(b"taken")
        first = free_name(tmp_path, name)
        first.write_bytes(b"taken too")
        second = free_name(tmp_path, name, taken={tmp_path / "unrelated.jpg"})
        assert len({name, first.name, second.name}) == 3 and first.suffix == second.suffix == Path(name).suffix
        assert hash_percentage(first.name) == hash_percentage(second.name) == hash_percentage(name)


def test_assign_discard_undo_and_the_sidecar_follows(tmp_path):
    source, data = make_folders(tmp_path, 12)
    sidecar_before = (source / UNCERTAIN_SIDECAR).read_bytes()
    with session_of(source, data, tmp_path) as session:
        listing = json.loads(session.listing())
        photos = listing["photos"]
        assert len(photos) == 12 and [entry["count"] for entry in listing["classes"]] == [1, 1, 1]
        # Grouped by predicted label, worst top score first within a group.
        assert [photo["group"] for photo in photos] == sorted(photo["group"] for photo in photos)
        for group in CLASSES:
            tops = [photo["scores"][0][1] for photo in photos if photo["group"] == group]
            assert tops == sorted(tops)
        names = {photo["id"]: photo["name"] for photo in photos}
        origins = {photo_id: next(source.glob(f"*/{name}")) for photo_id, name in names.items()}

        changes = session.assign([0, 1], "tulips")
        assert [change["class"] for change in changes["changes"]] == ["tulips", "tulips"]
        session.discard([2])
        assert (data / "tulips" / names[0]).exists() and not origins[0].exists()
        discarded = source / DISCARDED_FOLDER / origins[2].parent.name / names[2]
        assert discarded.exists() and not origins[2].exists()
        assert sorted(sidecar_files(data)) == sorted(f"tulips/{names[i]}" for i in (0, 1))
        assert f"{DISCARDED_FOLDER}/{origins[2].parent.name}/{names[2]}" in sidecar_files(source)
        assert len(sidecar_files(source)) == 10
        assert session.classes()[2] == {"name": "tulips", "count": 3}

        session.undo()  # the discard
        session.undo()  # both assignments, one action
        assert all(path.exists() for path in origins.values())
        assert sorted(sidecar_files(source)) == sorted(path.relative_to(source).as_posix() for path in origins.values())
        assert (source / UNCERTAIN_SIDECAR).read_bytes() == sidecar_before  # each line back in its place
        assert sidecar_files(data) == []
        with pytest.raises(Exception, match="nothing to undo"):
            session.undo()


def test_a_new_class_folder_is_made_on_its_first_photo_and_removed_when_undo_empties_it(tmp_path):
    source, data = make_folders(tmp_path, 3)
    with session_of(source, data, tmp_path) as session:
        assert session.add_class("sunflowers") == "sunflowers" and not (data / "sunflowers").exists()
        for bad in ("../escape", ".hidden", "a/b"):
            with pytest.raises(Exception, match="not a class folder name"):
                session.add_class(bad)
        session.assign([0], "sunflowers")
        assert len(list((data / "sunflowers").iterdir())) == 1
        session.undo()
        assert not (data / "sunflowers").exists()  # train refuses an empty class folder


def test_a_new_dataset_offers_the_predicted_labels_as_classes(tmp_path):
    source = bench_review.make_uncertain_folder(tmp_path / "uncertain", 8, 0, CLASSES, FRAME_SIZE)
    with session_of(source, tmp_path / "new", tmp_path) as session:
        assert session.classes() == [{"name": name, "count": 0} for name in CLASSES]
        session.assign([0], "roses")
        assert session.classes()[1] == {"name": "roses", "count": 1}


def test_two_photos_with_one_name_from_different_bursts_both_survive(tmp_path):
    source, data = make_folders(tmp_path, 2)
    name = "20261129-081502-3fa2_nohash_0003.jpg"  # the same burst id drawn on two devices
    for folder, colour in (("daisy", b"first"), ("roses", b"second")):
        (source / folder).mkdir(exist_ok=True)
        shutil.copyfile(next(source.glob("*/*.jpg")), source / folder / name)
        with open(source / folder / name, "ab") as file:
            file.write(colour)  # two different files
    (data / "tulips" / name).write_bytes(b"already there")
    contents = {(source / folder / name).read_bytes() for folder in ("daisy", "roses")} | {b"already there"}
    with session_of(source, data, tmp_path) as session:
        ids = [photo["id"] for photo in json.loads(session.listing())["photos"] if photo["name"] == name]
        session.assign(ids, "tulips")
    landed = sorted((data / "tulips").glob("20261129-081502-3fa2_nohash_0003*.jpg"))
    assert len(landed) == 3 and {path.read_bytes() for path in landed} == contents
    assert len({hash_percentage(path.name) for path in landed}) == 1  # all three in one set


def test_a_restart_finishes_a_journalled_move_the_crash_cut_short(tmp_path):
    """The state a kill between the journal's fsync and the rename leaves: a journal line, the file not moved."""
    source, data = make_folders(tmp_path, 4)
    photo = sorted(source.glob("*/*.jpg"))[0]
    origin = photo.relative_to(source).as_posix()
    line = {"action": 1, "kind": "assign", "from": origin, "to": f"../data/roses/{photo.name}", "origin": origin}
    (source / STATE_FOLDER).mkdir()
    # A second action whose line a crash cut short was never started: its renames come after the whole line.
    (source / STATE_FOLDER / JOURNAL_FILE).write_text(json.dumps(line) + '\n{"action": 2, "kind": "disc')
    before = tree(source, data)
    with session_of(source, data, tmp_path) as session:
        assert not photo.exists() and (data / "roses" / photo.name).read_bytes() == before[str(photo)]
        entry = next(entry for entry in json.loads(session.listing())["photos"] if entry["name"] == photo.name)
        assert entry["class"] == "roses" and entry["moved"]
        assert f"roses/{photo.name}" in sidecar_files(data)
        journal = (source / STATE_FOLDER / JOURNAL_FILE).read_text()
        assert journal == json.dumps(line) + "\n" + json.dumps({"action": 1, "done": True}) + "\n"
        session.undo()
        assert photo.read_bytes() == before[str(photo)]
    assert tree(source, data) == before  # sidecars included: the line went to DATA and came back


def test_audit_mode_moves_flagged_photos_between_the_datasets_own_folders(tmp_path):
    image_dir, _ = make_folders(tmp_path, 30)  # a dataset of three classes
    flagged = sorted((image_dir / "roses").iterdir())[:2]
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "audit.json").write_text(json.dumps({"image_dir": str(image_dir), "suspected_mislabels": [
        {"path": f"roses/{flagged[0].name}", "label": "roses", "predicted": "tulips", "confidence": 0.85},
        {"path": f"roses/{flagged[1].name}", "label": "roses", "predicted": "tulips", "confidence": 0.95}]}))
    with ReviewSession(ReviewOptions(audit=report_dir, thumbnail_dir=tmp_path / "thumbnails")) as session:
        photos = json.loads(session.listing())["photos"]
        assert [(photo["name"], photo["labelled"], photo["group"], photo["class"], photo["moved"]) for photo in photos] == [
            (flagged[1].name, "roses", "tulips", "roses", False),  # the more confident flag first
            (flagged[0].name, "roses", "tulips", "roses", False)]
        session.assign([0], "tulips")
        session.discard([1])
    assert (image_dir / "tulips" / flagged[1].name).exists()
    assert (image_dir / DISCARDED_FOLDER / "roses" / flagged[0].name).exists()
    assert list_images(image_dir).labels == list(CLASSES)  # the journal and the discarded are no classes
    with pytest.raises(Exception, match="leave out --into"):
        ReviewSession(ReviewOptions(into=tmp_path / "elsewhere", audit=report_dir))
    result = CliRunner().invoke(app, ["review", "--audit", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "has no audit.json: run retrain-edge audit" in result.output


def test_after_a_failed_rename_nothing_more_is_done_until_a_restart_finishes_the_action(tmp_path):
    source, data = make_folders(tmp_path, 3)
    with session_of(source, data, tmp_path) as session:
        photos = json.loads(session.listing())["photos"]
        gone = next(source.glob(f"*/{photos[0]['name']}"))
        gone.unlink()  # by hand, behind review's back
        with pytest.raises(Exception, match="cannot move"):
            session.assign([0, 1], "roses")
        with pytest.raises(Exception, match="start review again"):
            session.discard([2])
    with session_of(source, data, tmp_path) as session:
        photos = json.loads(session.listing())["photos"]
        assert [photo["class"] for photo in photos] == ["roses", None]  # the journalled move of photo 1, finished


def test_a_second_review_of_one_folder_is_refused(tmp_path):
    source, data = make_folders(tmp_path, 1)
    with session_of(source, data, tmp_path) as session:
        result = CliRunner().invoke(app, ["review", str(source), "--into", str(data), "--serve", "127.0.0.1:0"])
        assert result.exit_code == 2 and "another `retrain-edge review` is moving photos in" in result.output


def test_a_finished_action_is_not_redone_after_a_photo_was_moved_back_by_hand(tmp_path):
    source, data = make_folders(tmp_path, 2)
    with session_of(source, data, tmp_path) as session:
        session.assign([0], "roses")
    journal = [json.loads(line) for line in (source / STATE_FOLDER / JOURNAL_FILE).read_text().splitlines()]
    assert journal[-1] == {"action": 1, "done": True}
    moved, back = source / journal[0]["to"], source / journal[0]["origin"]
    os.rename(moved, back)  # the person changed their mind, by hand
    with session_of(source, data, tmp_path):
        assert back.exists() and not moved.exists()


def test_a_label_of_no_folder_or_of_an_existing_class_is_refused_as_one_line(tmp_path):
    source, data = make_folders(tmp_path, 1)
    with session_of(source, data, tmp_path) as session:
        for name, message in (("...", "no usable folder name"), ("Roses", "is the class 'roses'"),
                              ("tulips-", "is the class 'tulips'"), ("-", "not a class folder name")):
            with pytest.raises(UserError, match=message):
                session.add_class(name)
        session.add_class("Sun flowers")
        with pytest.raises(UserError, match="is the class 'Sun flowers'"):
            session.add_class("sun_flowers")


def test_a_predicted_label_of_no_folder_is_not_offered_and_a_bad_audit_json_is_one_line(tmp_path):
    source = bench_review.make_uncertain_folder(tmp_path / "uncertain", 3, 0, CLASSES, FRAME_SIZE)
    records = [json.loads(line) for line in (source / UNCERTAIN_SIDECAR).read_text().splitlines()]
    records[0]["top_k"][0]["label"] = "..."
    (source / UNCERTAIN_SIDECAR).write_text("".join(json.dumps(record) + "\n" for record in records))
    with session_of(source, tmp_path / "new", tmp_path) as session:
        assert "..." not in [entry["name"] for entry in session.classes()] and session.classes()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "audit.json").write_text("{}")
    result = CliRunner().invoke(app, ["review", "--audit", str(tmp_path / "report")])
    assert result.exit_code == 2 and result.output.startswith("error: cannot read") and "\n" not in result.output.strip()
    assert "not what retrain-edge audit writes" in result.output


def test_without_fcntl_review_says_which_systems_it_needs_and_audit_still_imports(tmp_path):
    source, data = make_folders(tmp_path, 1)
    script = ("import sys; sys.modules['fcntl'] = None\n"  # as on Windows: `import fcntl` raises ImportError
              "import trainer.audit, trainer.review_page\n"
              "from trainer.review import ReviewOptions, ReviewSession\n"
              f"ReviewSession(ReviewOptions({str(source)!r}, {str(data)!r}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
    assert "UserError: review needs Linux or macOS" in result.stderr


def test_read_only_writes_nothing_and_two_viewers_both_open(tmp_path):
    source = bench_review.make_uncertain_folder(tmp_path / "uncertain", 4, 0, CLASSES, FRAME_SIZE)
    data = tmp_path / "not yet"
    before = tree(source)
    options = ReviewOptions(source, data, read_only=True, thumbnail_dir=tmp_path / "thumbnails")
    with ReviewSession(options) as first, ReviewSession(options) as second:
        assert len(json.loads(first.listing())["photos"]) == len(json.loads(second.listing())["photos"]) == 4
        for change in (lambda: first.assign([0], "roses"), lambda: first.discard([0]), first.undo,
                       lambda: first.add_class("sunflowers")):
            with pytest.raises(UserError, match="read-only"):
                change()
    assert not data.exists() and not (source / STATE_FOLDER).exists() and tree(source) == before
    with session_of(source, data, tmp_path), ReviewSession(options):  # beside a review that changes things
        pass


def test_a_second_review_into_the_same_data_is_refused(tmp_path):
    source, data = make_folders(tmp_path, 2)
    other = bench_review.make_uncertain_folder(tmp_path / "other", 2, 1, CLASSES, FRAME_SIZE)
    with session_of(source, data, tmp_path):
        with pytest.raises(UserError, match=f"moving photos in {data}"):
            session_of(other, data, tmp_path)
    with session_of(other, data, tmp_path):  # once the first is closed
        pass


def test_undo_skips_actions_whose_photos_are_no_longer_listed(tmp_path):
    image_dir, _ = make_folders(tmp_path, 30)
    flagged = sorted((image_dir / "roses").iterdir())[:2]
    report_dir = tmp_path / "report"
    report_dir.mkdir()

    def audit_flags(*photos: Path) -> None:
        (report_dir / "audit.json").write_text(json.dumps({"image_dir": str(image_dir), "suspected_mislabels": [
            {"path": photo.relative_to(image_dir).as_posix(), "label": photo.parent.name, "predicted": "tulips",
             "confidence": 0.9} for photo in photos]}))

    audit_flags(*flagged)
    options = ReviewOptions(audit=report_dir, thumbnail_dir=tmp_path / "thumbnails")
    with ReviewSession(options) as session:
        session.assign([0], "tulips")
        session.assign([1], "daisy")
    audit_flags(image_dir / "tulips" / flagged[0].name)  # audit ran again: the photo moved into daisy is gone
    journal = (image_dir / STATE_FOLDER / JOURNAL_FILE).read_text()
    with ReviewSession(options) as session:
        assert session.undoable() == 1
        session.undo()
        assert session.undoable() == 0
        assert (image_dir / "roses" / flagged[0].name).exists() and (image_dir / "daisy" / flagged[1].name).exists()
        with pytest.raises(UserError, match="nothing to undo"):
            session.undo()
    assert journal.count("\n") + 2 == (image_dir / STATE_FOLDER / JOURNAL_FILE).read_text().count("\n")


def test_a_photo_gone_meanwhile_is_a_404_and_a_thumbnail_survives_a_rename(served, tmp_path):
    source, data, server = served
    name = json.loads(server.session.listing())["photos"][0]["name"]
    next(source.glob(f"*/{name}")).unlink()
    assert request(server.url, "GET", "/photo/0")[0] == 404
    assert request(server.url, "GET", "/listing.json")[0] == 200  # and the page goes on
    status, first = request(server.url, "GET", "/thumb/1")
    cached = sorted((tmp_path / "thumbnails").rglob("*.jpg"))
    assert status == 200 and len(cached) == 1
    assert post(server.url, "/assign", {"ids": [1], "class": "roses"}, server.token)[0] == 200
    assert request(server.url, "GET", "/thumb/1")[1] == first
    assert sorted((tmp_path / "thumbnails").rglob("*.jpg")) == cached  # the moved photo kept its thumbnail


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = url.split("//")[1].strip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post(url: str, path: str, value, token: str | None, headers: dict | None = None):
    headers = {"Content-Type": "application/json", **({TOKEN_HEADER: token} if token else {}), **(headers or {})}
    return request(url, "POST", path, json.dumps(value).encode(), headers)


@pytest.fixture
def served(tmp_path):
    source, data = make_folders(tmp_path, 6)
    with session_of(source, data, tmp_path) as session, ReviewServer(session, "127.0.0.1", 0) as server:
        yield source, data, server


def test_forged_and_path_naming_requests_change_nothing(served):
    source, data, server = served
    before = tree(source, data)
    photo = sorted(source.glob("*/*.jpg"))[0].relative_to(source).as_posix()
    refused = [
        post(server.url, "/assign", {"ids": [0], "class": "roses"}, None),  # another site's page: no token
        post(server.url, "/assign", {"ids": [0], "class": "roses"}, "guessed"),
        request(server.url, "POST", "/assign", b"ids=0&class=roses", {"Content-Type": "application/x-www-form-urlencoded"}),
        post(server.url, "/assign", {"ids": [0], "class": "roses"}, server.token, {"Host": "evil.example:80"}),
    ]
    assert [status for status, _ in refused] == [403, 403, 403, 403]
    naming_paths = [
        post(server.url, "/assign", {"ids": [photo], "class": "roses"}, server.token),
        post(server.url, "/assign", {"ids": ["../../etc/passwd"], "class": "roses"}, server.token),
        post(server.url, "/assign", {"path": photo, "class": "roses"}, server.token),
        post(server.url, "/assign", {"ids": [0], "class": "../../escape"}, server.token),
        post(server.url, "/discard", {"ids": [999]}, server.token),
        post(server.url, f"/discard/{photo}", {"ids": [0]}, server.token),
        post(server.url, "/class", {"name": "../escape"}, server.token),
        post(server.url, "/assign", {"ids": [0], "class": "roses"}, server.token, {"Content-Type": "text/plain"}),
    ]
    assert [status for status, _ in naming_paths] == [400, 400, 400, 400, 400, 404, 400, 400]
    for path in ("/thumb/../../etc/passwd", f"/photo/{photo}", "/thumb/%C2%B2", "/thumb/-1", "/thumb/99", "/listing.json/x", "/etc"):
        assert request(server.url, "GET", path)[0] in (400, 404), path
    assert tree(source, data) == before
    assert post(server.url, "/assign", {"ids": [0], "class": "roses"}, server.token)[0] == 200
    assert tree(source, data) != before


def test_read_only_serves_the_page_without_a_token_and_refuses_changes(tmp_path):
    source, data = make_folders(tmp_path, 2)
    with (session_of(source, data, tmp_path) as session,
          ReviewServer(session, "127.0.0.1", 0, read_only=True) as server):
        before = tree(source, data)
        status, page = request(server.url, "GET", "/")
        assert status == 200 and server.token.encode() not in page
        assert post(server.url, "/assign", {"ids": [0], "class": "roses"}, server.token)[0] == 403
        status, thumbnail = request(server.url, "GET", "/thumb/0")
        assert status == 200 and thumbnail[:2] == b"\xff\xd8"
        assert tree(source, data) == before


def start_review(*arguments: str) -> tuple[subprocess.Popen, str]:
    """`retrain-edge review ...` in its own process, as typed; returns it and the page's URL."""
    process = subprocess.Popen([sys.executable, "-c", "from trainer.cli import main; main()", "review", *arguments],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.startswith("review at "), line + process.stderr.read()
    return process, line.split()[2]


def token_of(url: str) -> str:
    page = request(url, "GET", "/")[1].decode()
    return json.loads(page.split("const SETTINGS = ")[1].split(";\n")[0])["token"]


def test_the_command_prints_a_summary_and_the_next_command_without_tensorflow(tmp_path):
    source, data = make_folders(tmp_path, 5)
    process, url = start_review(str(source), "--into", str(data), "--serve", "127.0.0.1:0",
                                "--thumbnail-dir", str(tmp_path / "thumbnails"))
    try:
        token = token_of(url)
        assert post(url, "/assign", {"ids": [0, 1], "class": "roses"}, token)[0] == 200
        assert post(url, "/discard", {"ids": [2]}, token)[0] == 200
        assert post(url, "/finish", {}, token)[0] == 200
        # Through the buffered files start_review's readline used (communicate() reads the raw
        # descriptors and would lose what readline buffered), bounded by the watchdog.
        watchdog = threading.Timer(TEST_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            output, errors = process.stdout.read(), process.stderr.read()
            process.wait(TEST_TIMEOUT_S)
        finally:
            watchdog.cancel()
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert output.splitlines() == [
        f"moved 2 photos into {data.resolve()} (roses 2)", f"discarded 1 into {source.resolve() / DISCARDED_FOLDER}",
        "2 left as they were", f"next: retrain-edge train --image_dir {data.resolve()}"]
    probe = ("import sys; from typer.testing import CliRunner; from trainer.cli import app; "
             f"result = CliRunner().invoke(app, ['review', {str(source)!r}]); "
             "print(result.exit_code, 'tensorflow' in sys.modules, result.output.strip())")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=TEST_TIMEOUT_S,
                          check=True).stdout.strip() == "2 False error: give SOURCE and --into DATA (or --audit DIR)"


def test_sigkill_while_moving_leaves_a_state_a_restart_makes_consistent(tmp_path):
    """SIGKILL the server as soon as the journal holds an action of many moves: whatever it cut, nothing is lost."""
    source, data = make_folders(tmp_path, 400)
    contents = sorted(path.read_bytes() for path in source.glob("*/*.jpg"))
    process, url = start_review(str(source), "--into", str(data), "--serve", "127.0.0.1:0",
                                "--thumbnail_dir", str(tmp_path / "thumbnails"))
    journal = source / STATE_FOLDER / JOURNAL_FILE
    try:
        token = token_of(url)
        body = json.dumps({"ids": list(range(400)), "class": "daisy"}).encode()
        connection = http.client.HTTPConnection(*url.split("//")[1].strip("/").split(":"), timeout=10)
        connection.request("POST", "/assign", body, {"Content-Type": "application/json", TOKEN_HEADER: token})
        for _ in range(10_000):  # bounded: the journal is written within milliseconds
            if journal.stat().st_size > 0:
                break
            time.sleep(0.0005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(TEST_TIMEOUT_S)
        connection.close()
    finally:
        process.kill()
    journalled = journal.read_text().count("\n")  # whole lines: the kill may have cut the write itself
    with session_of(source, data, tmp_path) as session:
        photos = json.loads(session.listing())["photos"]
        # Every journalled move is done, and only those.
        assert sum(photo["class"] == "daisy" for photo in photos) == journalled
        assert len(photos) == 400 and journal.read_text().count("\n") == len(journal.read_text().splitlines())
    moved = [path for path in (data / "daisy").iterdir() if not path.name.startswith("existing_")]
    assert sorted(path.read_bytes() for path in [*moved, *source.glob("[!.]*/*.jpg")]) == contents
    if moved:
        list_images(data)  # DATA is a dataset train reads


def wait_for(page, expression: str, argument=None) -> None:
    # Timed polling: a tab in the background gets no animation frames to poll on.
    page.wait_for_function(expression, arg=argument, polling=50, timeout=20_000)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_label_with_the_keyboard_in_headless_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    source, data = make_folders(tmp_path, 24)
    with session_of(source, data, tmp_path) as session, ReviewServer(session, "127.0.0.1", 0) as server:
        photos = json.loads(session.listing())["photos"]
        origin = {photo["id"]: next(source.glob(f"*/{photo['name']}")) for photo in photos}
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--disable-gpu", "--disable-dev-shm-usage"])
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(server.url, timeout=TEST_TIMEOUT_S * 1000)
            wait_for(page, "document.querySelectorAll('.card').length === 24")
            wait_for(page, "document.querySelector('.card img').naturalWidth > 0")  # a thumbnail loaded
            second_tab = context.new_page()
            second_tab.goto(server.url)
            wait_for(second_tab, "document.querySelectorAll('.class').length === 3")

            expected = {}  # photo id -> class
            keys = "12312312312312312"  # 17 photos, one key each; the cursor moves on to the next
            for number, key in enumerate(keys):
                page.keyboard.press(key)
                wait_for(page, "n => document.querySelectorAll('.card.moved').length === n", number + 1)
                expected[number] = CLASSES[int(key) - 1]
            page.keyboard.press("Shift+ArrowRight")  # photos 17 and 18, with one key
            page.keyboard.press("3")
            wait_for(page, "document.querySelectorAll('.card.moved').length === 19")
            expected |= {17: "tulips", 18: "tulips"}
            page.keyboard.press("n")  # a new class, typed once, takes photo 19
            page.keyboard.type("sunflowers")
            page.keyboard.press("Enter")
            wait_for(page, "document.querySelectorAll('.card.moved').length === 20")
            expected[19] = "sunflowers"
            for photo_id, class_name in expected.items():
                assert (data / class_name / origin[photo_id].name).exists() and not origin[photo_id].exists()

            for remaining in (19, 17, 16):  # undo three actions: the new class, the pair, photo 16
                page.keyboard.press("u")
                wait_for(page, "n => document.querySelectorAll('.card.moved').length === n", remaining)
            for photo_id in (16, 17, 18, 19):
                assert origin[photo_id].exists(), photo_id
            assert not (data / "sunflowers").exists()

            page.locator(".card").nth(23).click()
            page.keyboard.press("x")
            wait_for(page, "document.querySelectorAll('.card.discarded').length === 1")
            assert (source / DISCARDED_FOLDER / origin[23].parent.name / origin[23].name).exists()

            counts = {name: 1 + sum(1 for photo_id, label in expected.items() if label == name and photo_id < 16)
                      for name in CLASSES} | {"sunflowers": 0}  # a class typed once stays, with its key
            shown = "Array.from(document.querySelectorAll('.class .count')).map(count => Number(count.textContent))"
            wait_for(second_tab, f"counts => JSON.stringify({shown}) === JSON.stringify(counts)", list(counts.values()))
            wait_for(second_tab, "document.querySelectorAll('.card.discarded').length === 1")
            assert [entry["count"] for entry in session.classes()] == list(counts.values())
            browser.close()
