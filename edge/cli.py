"""`edge-classify`: classify image files, folders, a camera or a video with a TFLite model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import UserError
from .classify import EMIT_CHOICES, ClassifyOptions, StageTimes, run
from .collect import DEFAULT_COLLECT_EVERY_S, DEFAULT_SAVE_EVERY_S, DEFAULT_SAVE_MAX, CollectOptions, collect
from .consumers import ConsumerOptions, frame_consumers
from .health import Health
from .logs import OneLineUsageErrors, setup_logging
from .motion import DEFAULT_INTERVAL_S, DEFAULT_MOTION_THRESHOLD
from .mqtt import DEFAULT_DEBOUNCE, DEFAULT_DISCOVERY_PREFIX, DEFAULT_HEARTBEAT_S, PASSWORD_ENV, MqttOptions
from .results import UNKNOWN_LABEL, Result

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

EXIT_CAMERA_LOST = 1  # a live source could not be reopened: a service manager restarts the run
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT


def _format_result(result: Result, camera: str | None) -> str:
    """One line: `file: label score | label score | ...`, or `camera#frame: ...` for a stream."""
    name = f"{result.source}#{result.frame}" if result.source == camera else result.source
    scores = " | ".join(f"{label} {score:.3f}" for label, score in result.top_k)
    return f"{name}: {UNKNOWN_LABEL} | {scores}" if result.label == UNKNOWN_LABEL else f"{name}: {scores}"


@app.command(cls=OneLineUsageErrors)
def classify(
    inputs: Optional[list[Path]] = typer.Argument(None, help="Image files and folders (searched recursively).", show_default=False),
    camera: Optional[str] = typer.Option(None, "--camera", help="OpenCV camera index (0), a video file, a stream URL, or 'picamera'."),
    model: Optional[Path] = typer.Option(None, "--model", help="TFLite model (default: retrain_output/model.tflite, then model.tflite)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels file, one per line (default: the model's metadata, then labels.txt beside the model)."),
    num_threads: Optional[int] = typer.Option(None, "--num_threads", "--num-threads", help="Interpreter threads (default: number of cores)."),
    input_mean: Optional[float] = typer.Option(None, "--input_mean", "--input-mean", help="Float input = (pixel - mean) / std (default: model metadata, else 127.5)."),
    input_std: Optional[float] = typer.Option(None, "--input_std", "--input-std", help="See --input_mean (default: model metadata, else 127.5)."),
    top_k: int = typer.Option(3, "--top_k", "--top-k", help="Labels to show per image."),
    threshold: float = typer.Option(0.0, "--threshold", help=f"A top score below this is reported as '{UNKNOWN_LABEL}'."),
    max_frames: Optional[int] = typer.Option(None, "--max_frames", "--max-frames", help="Stop after this many images or frames (with --collect: frames saved)."),
    smooth: int = typer.Option(1, "--smooth", help="Average scores over the last N camera frames."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write annotated camera frames to this video (.mp4, .avi)."),
    display: bool = typer.Option(False, "--display", help="Show annotated camera frames in a window (q quits)."),
    serve: Optional[str] = typer.Option(None, "--serve", metavar="[HOST:]PORT", help=(
        "Serve a read-only live view: / (page), /stream.mjpg, /events (Server-Sent Events of results, changes and "
        "health), /latest.json, /health.json. HOST defaults to 127.0.0.1; any other address is reachable by others "
        "without a password.")),
    max_reconnects: Optional[int] = typer.Option(None, "--max_reconnects", "--max-reconnects", help=(
        "Give up a lost camera or stream after this many failed attempts in a row to reopen it "
        "(waits 0.5 s, doubling to 30 s) and exit 1 (default: never give up).")),
    emit: str = typer.Option("all", "--emit", metavar="|".join(EMIT_CHOICES), help=(
        "all: print every result; changes: only the first and those whose (smoothed, thresholded) label differs "
        "from the previous one.")),
    delegate: Optional[Path] = typer.Option(None, "--delegate", help=(
        "External TFLite delegate library, e.g. libedgetpu.so.1 for a Coral Edge TPU (with a model compiled for it).")),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per line instead of text."),
    # Which part of the frame, and which frames, are classified (edge.region, edge.motion).
    crop: Optional[str] = typer.Option(None, "--crop", metavar="X,Y,W,H", help=(
        "Classify only this region of each image or frame: pixels, or fractions of the width and height when all "
        "four are at most 1 (0.5,0,0.5,1 is the right half). Cropped before resizing; --collect saves the same region.")),
    motion: bool = typer.Option(False, "--motion", help=(
        f"Classify a --camera frame only when its region moved, or when --interval (default {DEFAULT_INTERVAL_S:g} s) "
        "has passed; other frames are skipped: no result line, not counted by --max_frames or --smooth.")),
    motion_threshold: float = typer.Option(DEFAULT_MOTION_THRESHOLD, "--motion_threshold", "--motion-threshold", help=(
        "With --motion: the fraction of the region's pixels that must change for it to count as moving.")),
    interval: Optional[float] = typer.Option(None, "--interval", metavar="SECONDS", help=(
        "Classify a --camera frame at least every SECONDS (of video time for a video file); without --motion, "
        "only then.")),
    collect_dir: Optional[Path] = typer.Option(None, "--collect", metavar="DIR", help=(
        "Instead of classifying, save --camera frames as JPEG training images into DIR/<--label>/, one burst "
        "per run named <burst id>_nohash_<n>.jpg so the split keeps it in one set; never overwrites. No model needed.")),
    label: Optional[str] = typer.Option(None, "--label", help="With --collect: the class being photographed (its folder name)."),
    every: float = typer.Option(DEFAULT_COLLECT_EVERY_S, "--every", metavar="SECONDS", help=(
        "With --collect: save at most one frame per this many seconds (of video time for a video file).")),
    save_uncertain: Optional[Path] = typer.Option(None, "--save_uncertain", "--save-uncertain", metavar="DIR", help=(
        "Save camera frames whose top score is below --threshold (or top-two margin below --margin) as "
        "DIR/<predicted label>/*.jpg, their scores appended to DIR/uncertain.jsonl: the frames worth labelling next.")),
    margin: Optional[float] = typer.Option(None, "--margin", help=(
        "With --save_uncertain: a frame whose top two scores differ by less than this is uncertain too.")),
    save_every: float = typer.Option(DEFAULT_SAVE_EVERY_S, "--save_every", "--save-every", metavar="SECONDS", help=(
        "With --save_uncertain: save at most one frame per this many seconds.")),
    save_max: int = typer.Option(DEFAULT_SAVE_MAX, "--save_max", "--save-max", metavar="N", help=(
        "With --save_uncertain: stop saving while DIR holds this many images (counting those already there).")),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", metavar="mqtt[s]://[user@]host[:port]", help=(
        "Publish the debounced label of --camera to this MQTT broker (needs paho-mqtt: the mqtt extra), with Home "
        f"Assistant discovery. The password comes from ${PASSWORD_ENV} or --mqtt_password_file, never the URL.")),
    mqtt_topic: Optional[str] = typer.Option(None, "--mqtt_topic", "--mqtt-topic", help=(
        "Base topic of availability, state, event and snapshot (default: edge-classify/<host name>).")),
    mqtt_password_file: Optional[Path] = typer.Option(None, "--mqtt_password_file", "--mqtt-password-file", help=(
        f"File holding the --mqtt user's password (default: ${PASSWORD_ENV}).")),
    mqtt_ca: Optional[Path] = typer.Option(None, "--mqtt_ca", "--mqtt-ca", help=(
        "With mqtts://: the CA certificate (PEM) that signed the broker's (default: the system's).")),
    mqtt_cert: Optional[Path] = typer.Option(None, "--mqtt_cert", "--mqtt-cert", help=(
        "With mqtts://: a client certificate (PEM), for brokers that require one.")),
    mqtt_key: Optional[Path] = typer.Option(None, "--mqtt_key", "--mqtt-key", help=(
        "With --mqtt_cert: its private key, when not in the same file.")),
    mqtt_snapshot: bool = typer.Option(False, "--mqtt_snapshot", "--mqtt-snapshot", help=(
        "Also publish a JPEG of the region classified (at most 64 KB) at each change, retained, and a Home Assistant "
        "image.")),
    debounce: int = typer.Option(DEFAULT_DEBOUNCE, "--debounce", metavar="N", help=(
        "With --mqtt: the state changes after N identical results in a row (after --smooth and --threshold).")),
    heartbeat: float = typer.Option(DEFAULT_HEARTBEAT_S, "--heartbeat", metavar="SECONDS", help=(
        "With --mqtt: republish the state this often, with its latest scores.")),
    discovery_prefix: str = typer.Option(DEFAULT_DISCOVERY_PREFIX, "--discovery_prefix", "--discovery-prefix", help=(
        "With --mqtt: Home Assistant's discovery prefix.")),
    no_discovery: bool = typer.Option(False, "--no_discovery", "--no-discovery", help=(
        "With --mqtt: publish no Home Assistant discovery configs.")),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages and LiteRT's start-up lines."),
) -> None:
    """Classify images, a camera or a video with a TFLite image classifier (no TensorFlow needed).

    A camera or stream is read on its own thread that keeps only the newest frame, and is reopened
    when lost. SIGTERM and Ctrl-C stop after the current frame, with the --save video complete:
    exit code 0 for SIGTERM, 130 for Ctrl-C.
    """
    setup_logging(verbose)
    if collect_dir is not None:
        _collect(collect_dir, label, every, camera, inputs, max_frames, max_reconnects, serve, crop,
                 bool(save or display or save_uncertain or motion or interval is not None or mqtt is not None))
        return
    if label is not None:
        print("error: --label names the class for --collect DIR", file=sys.stderr)
        raise typer.Exit(2)
    options = ClassifyOptions(
        inputs=list(inputs or []), camera=camera, model=model, labels=labels, num_threads=num_threads,
        input_mean=input_mean, input_std=input_std, top_k=top_k, threshold=threshold, max_frames=max_frames,
        smooth=smooth, max_reconnects=max_reconnects, emit=emit, delegate=delegate, crop=crop, motion=motion,
        motion_threshold=motion_threshold, interval=interval)
    consumer_options = ConsumerOptions(save=save, display=display, serve=serve, save_uncertain=save_uncertain,
                                       margin=margin, save_every=save_every, save_max=save_max,
                                       mqtt=None if mqtt is None else MqttOptions(  # --mqtt "": parse_url says why not
                                           mqtt, mqtt_topic, mqtt_password_file, mqtt_ca, mqtt_cert, mqtt_key, debounce,
                                           heartbeat, mqtt_snapshot, not no_discovery, discovery_prefix))

    def on_result(result: Result) -> None:
        print(json.dumps(result.to_json()) if json_lines else _format_result(result, camera), flush=True)

    health = Health()

    def on_stats(stats: StageTimes) -> None:
        print(str(stats), file=sys.stderr, flush=True)
        health.record(stats)

    def on_serving(url: str) -> None:
        print(f"live view at {url}", file=sys.stderr, flush=True)

    summary = _run_reporting_errors(lambda: run(options, on_result, on_stats,
                                                frame_consumers(consumer_options, options, on_serving, health)))
    if summary.source_lost and not summary.terminated:
        raise typer.Exit(EXIT_CAMERA_LOST)


def _collect(folder: Path, label: str | None, every: float, camera: str | None, inputs: list[Path] | None,
             max_frames: int | None, max_reconnects: int | None, serve: str | None, crop: str | None,
             classifying: bool) -> None:
    """--collect: save frames for training, print each file saved, then the summary."""
    problem = ("--collect needs --label NAME, the class being photographed" if label is None
               else "--collect needs --camera (a camera, video file or stream)" if camera is None
               else "--collect takes frames from --camera, not image files" if inputs
               else "--save, --display, --save_uncertain, --motion, --interval and --mqtt classify; --collect does not"
               if classifying else None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise typer.Exit(2)
    _run_reporting_errors(lambda: collect(
        CollectOptions(camera, folder, label, every, max_frames, max_reconnects, serve, crop),
        lambda path: print(f"saved {path}", flush=True),
        lambda url: print(f"live view at {url}", file=sys.stderr, flush=True)))


def _run_reporting_errors(work):
    """Run `work`; a UserError is one `error:` line and exit 2; print the summary it returns.

    Ctrl-C (the summary's `interrupted`) exits EXIT_INTERRUPTED after the summary; before the run
    has one (while the model loads), it exits EXIT_INTERRUPTED at once.
    """
    try:
        summary = work()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    print(str(summary), file=sys.stderr)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    return summary


def main() -> None:
    app()
