"""A stand-in for CUDA-graph capture on the CPU, for the tests of the graph cache's users."""

from autogan_fast.engines.cuda_graphs import CaptureBackend


class RecordingBackend(CaptureBackend):
    """Eager like its base, recording the order of warm-ups, captures and replays in `events`."""

    def __init__(self):
        self.events = []

    def warmup(self, step):
        self.events.append("warmup")
        step()

    def capture(self, step):
        self.events.append("capture")

        def replay():
            self.events.append("replay")
            step()

        return replay
