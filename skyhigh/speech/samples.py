"""Audio as Whisper takes it: 16 kHz mono float32, heard in 30-second windows.

Every speech module takes these numbers from here, so they are defined once.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE: Final = 16_000
WINDOW_S: Final = 30.0  # one Whisper window
WINDOW_SAMPLES: Final = int(WINDOW_S * SAMPLE_RATE)
FRAMES_PER_SECOND: Final = 100  # log-mel frames; also the unit of a segment's `seek`
WINDOW_FRAMES: Final = int(WINDOW_S * FRAMES_PER_SECOND)
