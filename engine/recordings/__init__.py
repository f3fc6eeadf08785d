"""Recording segments: frames + actions + poses -> an H.264 mp4 and an npz, written off the game loop.

Files of one segment with stem S (by default `recordings/<world>/<YYYYmmdd-HHMMSS>`):

* `S.mp4`: H.264, yuv420p, constant frame rate `fps`, CRF 18 (x264 preset `veryfast`), encoded by the
  ffmpeg binary that imageio-ffmpeg ships. Frames keep their size (imageio's macro-block rounding would
  rescale them); an odd width or height is padded by one black pixel, as yuv420p needs even sizes.
* `S.npz` (uncompressed, `np.load(S.npz)` with the default `allow_pickle=False` reads it):

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

Threading and crash safety: `append` copies the frame and puts it on a bounded queue (it blocks only
when `queue_frames` frames are waiting, i.e. when the disk cannot keep up); a background thread pipes
frames to ffmpeg and spools the rows, every `chunk_frames` frames, into `S.spool/chunk_NNNNNN.npz`
(each written to a temporary name, then renamed). `close()` finishes the mp4, streams the chunks into
`S.npz.tmp`, renames it to `S.npz` and deletes the spool. If the process dies without closing (SIGKILL,
power loss), the spool still holds every finished chunk and `python -m engine.recordings recover S` rebuilds `S.npz` and,
when the mp4 was left unfinished, re-encodes it from the frames: at most the last chunk is lost.
Writers still open at interpreter exit (normal exit, uncaught exception, KeyboardInterrupt) are closed
by an atexit hook; `install_signal_finalizers()` makes SIGTERM/SIGHUP raise `Terminated` so that they
end the same way instead of killing the process outright.

A full disk (or any other write error) stops the recording with one message, available at once as
`writer.error` and raised by `close()` as `RecordingError`; everything written until then is kept.
"""

from engine.recordings.finalize import Terminated, install_signal_finalizers
from engine.recordings.format import FORMAT_NAME, FORMAT_VERSION, RecordingError, segment_stem
from engine.recordings.reader import read_recording
from engine.recordings.recovery import recover_segment
from engine.recordings.writer import SegmentWriter

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "RecordingError", "SegmentWriter", "Terminated", "install_signal_finalizers", "read_recording",
           "recover_segment", "segment_stem"]
