"""Reading and writing videos: video files through PyAV, folders of numbered frames through PIL.

Decoded frames are streamed as uint8 numpy arrays ``[n, 3, H, W]`` (channels first, RGB), at most
``chunk`` frames at a time, so memory does not grow with the length of a video. Every problem a
user's input can cause ends in a one-line ``UserError`` that names the file.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, UserError
from ..utils.fs import fsync_dir

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

DEFAULT_FOLDER_FPS = 25.0
"""Frame rate given to frame folders, and to video files whose container states none."""

RESIZE_MODES = ("resize", "crop")

QUALITIES = {
    "high": {"crf": 10, "qscale": 2},
    "medium": {"crf": 18, "qscale": 4},
    "low": {"crf": 28, "qscale": 8},
}
"""Encoder settings per quality: ``crf`` for libx264, ``qscale`` for the mpeg4 fallback."""

_PIL_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int | None
    """From the container's header when it states one, else None."""
    width: int
    height: int


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``f2`` < ``f10``; letters ignore case."""
    # re.split with a group alternates text and digits and always starts with text, so two keys
    # compare str with str and int with int.
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(re.split(r"(\d+)", name))]


def is_video_source(path) -> bool:
    """True for a file with a video extension or a folder holding at least one image file."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTENSIONS
    if path.is_dir():
        return any(_is_frame_file(entry.name) for entry in os.scandir(path) if entry.is_file())
    return False


def probe(path) -> VideoInfo:
    """Frame rate, frame count and size of a video file or frame folder, without decoding frames."""
    path = _check_source(path)
    if path.is_dir():
        files = _frame_files(path)
        width, height = _image_size(files[0])
        for file in files[1:]:
            _check_frame_size(path, file, _image_size(file), files[0], (width, height))
        return VideoInfo(str(path), DEFAULT_FOLDER_FPS, len(files), width, height)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        if _quarter_turns(_first_rotation(container, stream)) % 2:  # a portrait phone video stored landscape
            width, height = height, width
        return VideoInfo(
            path=str(path),
            fps=float(rate) if rate else DEFAULT_FOLDER_FPS,
            num_frames=stream.frames or None,
            width=width,
            height=height,
        )


def _first_rotation(container, stream) -> int:
    """The display rotation of the first frame (0 if none decodes: reading the frames reports why).

    PyAV exposes the display matrix only on decoded frames, so one frame is decoded.
    """
    try:
        for frame in container.decode(stream):
            return frame.rotation
    except av.FFmpegError:
        pass
    return 0


def _quarter_turns(rotation: float) -> int:
    """A display rotation (degrees counter-clockwise) as a number of quarter turns, 0..3."""
    return round(rotation / 90) % 4


def _upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """A decoded ``[h, w, 3]`` frame turned as its display matrix says (phones store portrait
    video landscape plus a rotation); flips in the matrix are not applied."""
    turns = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def iter_frames(
    path,
    size: tuple[int, int] | None = None,
    resize_mode: str = "resize",
    stride: int = 1,
    chunk: int = 16,
) -> Iterator[np.ndarray]:
    """Stream every ``stride``-th frame as uint8 chunks ``[n <= chunk, 3, H, W]``.

    ``size=(H, W)`` resizes each frame: ``"resize"`` stretches it to H x W, ``"crop"`` scales it to
    cover H x W and centre-crops the excess. A frame folder is read in natural name order and all
    its frames must share one size.
    """
    if resize_mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode '{resize_mode}': expected one of {', '.join(RESIZE_MODES)}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ConfigError(f"invalid frame size {size}: expected (height, width), both positive")
    if stride < 1:
        raise ConfigError(f"invalid frame stride {stride}: must be at least 1")
    if chunk < 1:
        raise ConfigError(f"invalid chunk length {chunk}: must be at least 1")
    # Arguments, the path and a folder's listing are checked now, so that they fail at the call;
    # a video is opened on the first next() so that an unconsumed iterator holds no open file.
    path = _check_source(path)
    if path.is_dir():
        chunks = _folder_chunks(path, _frame_files(path), stride, chunk)
    else:
        chunks = _video_chunks(path, stride, chunk)
    return _resized(chunks, path, size, resize_mode)


def _resized(chunks: Iterator[np.ndarray], path: Path, size, resize_mode: str) -> Iterator[np.ndarray]:
    """Chunks ``[n, h, w, 3]`` to channels-first ``[n, 3, H, W]``, resized; UserError if there are none."""
    empty = True
    for frames in chunks:  # [n, h, w, 3]
        empty = False
        frames = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [n, 3, h, w], channels-last in memory
        if size is not None:
            frames = resize_frames(frames, size, resize_mode)
        yield np.ascontiguousarray(frames.numpy())  # [n, 3, H, W]
    if empty:
        raise UserError(f"cannot decode video '{path}': no frames decoded")


def read_video(path, size=None, resize_mode="resize", stride=1) -> tuple[np.ndarray, float]:
    """All (``stride``-th) frames as uint8 ``[F, 3, H, W]`` and their frame rate, source fps / stride."""
    fps = probe(path).fps / stride
    frames = np.concatenate(list(iter_frames(path, size, resize_mode, stride)))  # [F, 3, H, W]
    return frames, fps


class VideoWriter:
    """Writes uint8 ``[n, 3, H, W]`` frames to an mp4 file, atomically.

    Frames go to a hidden temporary file beside ``path``, which replaces ``path`` only when
    ``close`` succeeds; leaving the ``with`` block by an exception deletes it, so ``path`` is
    never half-written and a file already there survives a failed write.
    """

    def __init__(self, path, fps: float, width: int, height: int, quality: str = "high"):
        self.path = Path(path)
        self.width = width
        self.height = height
        if self.path.suffix.lower() != ".mp4":
            raise UserError(f"cannot write video '{self.path}': the file name must end in .mp4")
        if quality not in QUALITIES:
            raise ConfigError(f"unknown video quality '{quality}': expected one of {', '.join(QUALITIES)}")
        # yuv420p stores colour at half resolution, so the encoders refuse odd sizes.
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise UserError(
                f"cannot write video '{self.path}': width and height must be even, got {width}x{height}"
            )
        if not fps > 0:
            raise UserError(f"cannot write video '{self.path}': frame rate must be positive, got {fps}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write video '{self.path}': {_reason(err)}") from None

        # Named by hand rather than by tempfile.mkstemp, whose 0600 mode os.replace would carry over.
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        self._frames_written = 0
        self._container = None
        codec = _encoder()
        settings = QUALITIES[quality]
        options = {"crf": str(settings["crf"])} if codec == "libx264" else {}
        try:
            # faststart puts the index first, so a truncated copy still plays up to the cut.
            self._container = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
            rate = Fraction(fps).limit_denominator(1001)
            self._stream = self._container.add_stream(codec, rate=rate, options=options)
            self._stream.width = width
            self._stream.height = height
            self._stream.pix_fmt = "yuv420p"
            if codec == "mpeg4":
                # Pinning qmin = qmax gives a constant quantiser; the qscale flag would read a
                # per-frame quality that PyAV leaves at 0.
                self._stream.codec_context.qmin = settings["qscale"]
                self._stream.codec_context.qmax = settings["qscale"]
        except (av.FFmpegError, OSError) as err:
            self._abort()
            raise UserError(f"cannot write video '{self.path}': {_reason(err)}") from None

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames ``[n, 3, H, W]``."""
        if self._container is None:
            raise ValueError(f"video writer for '{self.path}' is already closed")
        expected = (3, self.height, self.width)
        is_array = isinstance(frames, np.ndarray)
        if not is_array or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != expected:
            got = f"{frames.dtype} {frames.shape}" if is_array else type(frames).__name__
            raise ValueError(f"expected uint8 frames [n, {', '.join(map(str, expected))}], got {got}")
        frames_hwc = np.ascontiguousarray(frames.transpose(0, 2, 3, 1))  # [n, H, W, 3]
        try:
            for frame in frames_hwc:
                for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    self._container.mux(packet)
        except (av.FFmpegError, OSError) as err:
            self._abort()
            raise UserError(f"cannot write video '{self.path}': {_reason(err)}") from None
        self._frames_written += len(frames)

    def close(self) -> None:
        """Finish the file and move it onto ``path``; closing twice is harmless."""
        if self._container is None:
            return
        if self._frames_written == 0:
            self._abort()
            raise ValueError(f"no frames were written to '{self.path}'")
        try:
            for packet in self._stream.encode(None):  # flush frames the encoder still holds
                self._container.mux(packet)
            self._container.close()
            self._container = None
            with open(self._tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except (av.FFmpegError, OSError) as err:
            self._abort()
            raise UserError(f"cannot write video '{self.path}': {_reason(err)}") from None

    def _abort(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass  # the file is deleted next; a failed trailer write does not matter
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def write_video(path, frames: np.ndarray, fps: float, quality="high") -> None:
    """Write uint8 frames ``[F, 3, H, W]`` to an mp4 file at ``path`` (atomically, see VideoWriter)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        got = getattr(frames, "shape", type(frames).__name__)
        raise ValueError(f"expected uint8 frames [F, 3, H, W], got {got}")
    with VideoWriter(path, fps, width=frames.shape[3], height=frames.shape[2], quality=quality) as writer:
        writer.write(frames)


@functools.cache
def _encoder() -> str:
    """libx264 when this PyAV build has it (wheels do), else FFmpeg's built-in mpeg4."""
    try:
        av.Codec("libx264", "w")
    except ValueError:  # av's UnknownCodecError
        return "mpeg4"
    return "libx264"


def _reason(err: Exception) -> str:
    """FFmpeg's or the OS's message, on one line, without av's '[Errno ...] ...: path' wrapping."""
    message = getattr(err, "strerror", None) or str(err) or type(err).__name__
    message = " ".join(str(message).split())
    return message[:1].lower() + message[1:]


def _check_source(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such video file or frame folder: '{path}'")
    if path.is_file() and path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UserError(
            f"unsupported video file '{path}': expected a frame folder"
            f" or a file ending in {', '.join(VIDEO_EXTENSIONS)}"
        )
    return path


def _open_video(path: Path):
    """An open container with at least one video stream."""
    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError) as err:
        raise UserError(f"cannot decode video '{path}': {_reason(err)}") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"cannot decode video '{path}': it has no video stream")
    if container.streams.video[0].codec_context is None:  # e.g. a file cut inside its header
        container.close()
        raise UserError(f"cannot decode video '{path}': its video stream has no usable codec")
    return container


def _video_chunks(path: Path, stride: int, chunk: int) -> Iterator[np.ndarray]:
    """Chunks ``[n, h, w, 3]`` of every ``stride``-th decoded frame."""
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = []
        shape = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                # Every frame must be decoded (they depend on each other); the RGB conversion,
                # which costs about as much, is only paid for the frames kept.
                if index % stride:
                    continue
                rgb = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)  # [h, w, 3], upright
                if shape is None:
                    shape = rgb.shape
                elif rgb.shape != shape:
                    raise UserError(
                        f"cannot decode video '{path}': frame {index} is {rgb.shape[1]}x{rgb.shape[0]}"
                        f" but earlier frames are {shape[1]}x{shape[0]}"
                    )
                frames.append(rgb)
                if len(frames) == chunk:
                    yield np.stack(frames)
                    frames = []
        except av.FFmpegError as err:
            raise UserError(f"cannot decode video '{path}': {_reason(err)}") from None
        if frames:
            yield np.stack(frames)


def _is_frame_file(name: str) -> bool:
    # Dot files are skipped: macOS writes '._name.png' metadata files that are not images.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _frame_files(folder: Path) -> list[Path]:
    """The folder's image files in natural order; the full name breaks ties such as f01 / f1."""
    names = [name for name in os.listdir(folder) if _is_frame_file(name)]
    names.sort(key=lambda name: (natural_key(name), name))
    if not names:
        raise UserError(f"frame folder '{folder}' holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [folder / name for name in names]


def _image_size(file: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(file) as image:
            return image.size
    except _PIL_ERRORS as err:
        raise UserError(f"cannot decode frame '{file}': {_reason(err)}") from None


def _check_frame_size(folder: Path, file: Path, size, first: Path, first_size) -> None:
    if size != first_size:
        raise UserError(
            f"frame folder '{folder}' mixes frame sizes: '{file.name}' is {size[0]}x{size[1]}"
            f" but '{first.name}' is {first_size[0]}x{first_size[1]}"
        )


def _folder_chunks(folder: Path, files: list[Path], stride: int, chunk: int) -> Iterator[np.ndarray]:
    """Chunks ``[n, h, w, 3]`` of every ``stride``-th of the folder's ``files``."""
    first_size = _image_size(files[0])
    frames = []
    for index, file in enumerate(files):
        if index % stride:
            # Skipped frames are still checked, so a bad size is reported whatever the stride.
            _check_frame_size(folder, file, _image_size(file), files[0], first_size)
            continue
        try:
            with Image.open(file) as image:
                _check_frame_size(folder, file, image.size, files[0], first_size)
                frames.append(np.asarray(image.convert("RGB")))  # [h, w, 3]
        except _PIL_ERRORS as err:
            raise UserError(f"cannot decode frame '{file}': {_reason(err)}") from None
        if len(frames) == chunk:
            yield np.stack(frames)
            frames = []
    if frames:
        yield np.stack(frames)


def crop_size(source: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the largest centred region of a ``source`` frame with the aspect ratio of
    ``size``: what ``"crop"`` keeps of each frame."""
    (h, w), (out_h, out_w) = source, size
    return min(h, round(w * out_h / out_w)), min(w, round(h * out_w / out_h))


def resize_frames(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize uint8 ``[n, 3, h, w]`` to ``[n, 3, H, W]``.

    "crop" cuts the centred region with the target's aspect ratio before resizing, which equals
    resizing the short side first and cropping after, at a fraction of the cost.
    """
    out_h, out_w = size
    h, w = frames.shape[-2:]
    if mode == "crop":
        crop_h, crop_w = crop_size((h, w), size)
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        frames = frames[:, :, top : top + crop_h, left : left + crop_w]
    if frames.shape[-2:] == (out_h, out_w):
        return frames
    # Kept uint8 and channels-last: torch's fast CPU path for antialiased bilinear (~10x float32).
    frames = frames.contiguous(memory_format=torch.channels_last)
    return F.interpolate(frames, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
