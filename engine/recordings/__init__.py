"""Recording segments: frames + actions + poses -> an H.264 mp4 and an npz, written off the game loop.

Files of one segment with stem S (by default `recordings/<world>/<YYYYmmdd-HHMMSS>`):

* `S.mp4`: H.264, yuv420p, constant frame rate `fps`, CRF 18 (x264 preset `veryfast`), encoded by the
  ffmpeg binary that imageio-ffmpeg ships, fragmented (one fragment per frame, flushed as soon as it is
  encoded). Frames keep their size (imageio's macro-block rounding would rescale them); an odd width or
  height is padded by one black pixel, as yuv420p needs even sizes. `<world>` must be one plain folder
  name (`check_world_name`), so recordings never land outside the recordings folder.
* `S.npz` (uncompressed zip64, `frames` first; `np.load(S.npz)` with the default `allow_pickle=False`
  reads it):

  | entry | shape, dtype | content |
  |---|---|---|
  | `frames` | (T, H, W, 3) uint8 | the exact RGB frames (the mp4 is lossy) |
  | `actions` | (T, A) float32 | the action that conditioned frame t |
  | `poses` | (T, 5) float32 | x, y, z, pitch, yaw; NaN where the world has no pose |
  | `timestamps` | (T,) float64 | seconds since the writer was opened, unless given to `append` |
  | `<name>` | (T, ...) as given | each per-frame array passed as `append(extra={name: ...})` |
  | `metadata` | 0-d str | a JSON object, below |

  `metadata` holds `format` ("neural-game-engine/recording"), `version` (1), `world`, `fps`, `part`
  (1-based), `first_frame` (index of this part's first frame in the whole recording), `num_frames`,
  `frame_size` ([H, W]), `action_dim`, `extra_keys`, `created` (local ISO-8601 time), `recovered`
  (true when rebuilt by `recover_segment`), plus every other key of the `metadata` dict given to the
  writer (checkpoint sha256, sampler settings, seed, backend, ...); the writer's own keys take precedence.

* Parts: with `max_bytes`, a segment whose npz payload plus mp4 would grow past it continues in
  `S-part2.mp4/.npz`, `S-part3...`; the mp4 size is what ffmpeg has flushed so far, so a part can run
  over by the encoder's lookahead (a few frames).

Threading: `append` copies the frame and puts it on a bounded queue (it blocks only when `queue_frames`
frames are waiting, i.e. when the disk cannot keep up); a background thread writes each row and pipes
the frame to ffmpeg.

While a part is written everything lives in `S.spool/` (see `spool`): the npz itself, growing in place
(`frames.npy` is its first member, zip64 and stored, each frame appended before it goes to ffmpeg), one
raw file per small array, and ffmpeg's fragmented `video.mp4`. `close()` appends the small arrays and the
zip directory to the npz, patches the frame count, CRC and sizes in place, renames it to `S.npz`, moves
the mp4 to `S.mp4` and deletes the spool: `S.npz` and `S.mp4` appear only complete, together, and an
older pair at the same stem is replaced, never mixed. Disk space for that end (and for ffmpeg's last
frames) is claimed while recording, so finishing needs no free space (only re-encoding an mp4 whose
encoder failed needs about that mp4's size again, which deleting it first gives back).

Crash safety: ffmpeg runs in its own session and finishes its file when the pipe closes, also when the
writing process was killed (SIGKILL). `python -m engine.recordings recover S` then waits for it, keeps
every whole row of the spool (so at least every frame ffmpeg got) and re-encodes the mp4 from the npz
unless it already holds exactly those frames. Writers still open at interpreter exit (normal exit,
uncaught exception, KeyboardInterrupt) are closed by an atexit hook; `install_signal_finalizers()` makes
SIGTERM/SIGHUP raise `Terminated` so that they end the same way instead of killing the process outright;
after the first such signal the program ignores the next ones (a double Ctrl+C) until it has ended.

A full disk (or any other write error) stops the recording at once, with one message available as
`writer.error` and raised by `close()` as `RecordingError`; every frame written until then is kept in a
complete mp4 + npz pair, and the message says how many.
"""

from engine.recordings.finalize import Terminated, install_signal_finalizers
from engine.recordings.format import (
           FORMAT_NAME,
           FORMAT_VERSION,
           RecordingError,
           check_world_name,
           segment_stem,
)
from engine.recordings.reader import read_recording
from engine.recordings.recovery import recover_segment
from engine.recordings.writer import SegmentWriter

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "RecordingError", "SegmentWriter", "Terminated", "check_world_name",
           "install_signal_finalizers", "read_recording", "recover_segment", "segment_stem"]
