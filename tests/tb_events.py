"""Reading TensorBoard event files back as TensorBoard shows them (shared by the training tests
and the fault-injection suite): TFRecord framing + tensorboardX's Event protobuf."""

from __future__ import annotations

import collections
from pathlib import Path


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in `log_dir` (oldest file first), as TensorBoard
    shows them: a session's START event purges the earlier sessions' points from its step on."""
    import struct

    from tensorboardX.proto.event_pb2 import Event, SessionLog

    series: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for points in series.values():
                    for step in [s for s in points if s >= event.step]:
                        del points[step]
            for value in event.summary.value:
                if not value.metadata.plugin_data.plugin_name:  # scalars; not the HParams plugin's records
                    series[value.tag][event.step] = value.simple_value
    return {tag: sorted(points.items()) for tag, points in series.items()}


def tensorboard_hparams(log_dir: Path) -> dict:
    """The hyperparameters of a run's first event file, as TensorBoard's HParams plugin reads them."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    path = sorted(log_dir.glob("events.out.tfevents.*"))[0]
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        event = Event.FromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                info = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                return {
                    k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                    for k, v in info.session_start_info.hparams.items()
                }
    return {}
