"""The torch-free embedding backend: an int8 ONNX export run by ONNX Runtime + `tokenizers`."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from skyhigh.knowledge.embedding import Backend
from skyhigh.knowledge.onnx_model import OnnxModel


class OnnxEmbedder:
    """Mean-pooled, normalised sentence embeddings from an export made by onnx_export.

    The graph does the pooling and normalisation itself, so this class only tokenises (truncated
    to the model's max_seq_length, as sentence-transformers does) and runs it. Thread-safe: ONNX
    Runtime sessions may run concurrently, and with one intra-op thread each call runs on its
    caller's thread.
    """

    backend: Backend = "onnx"

    def __init__(self, name: str, model: OnnxModel, *, threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.name = name
        self.model = model
        self.dimension: int = model.dimension
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin for a while after each call, taking CPU from
        # Whisper and the event loop on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(model.model_path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [node.name for node in self._session.get_inputs()]
        self._tokenizer = Tokenizer.from_file(str(model.tokenizer_path))
        # tokenizer.json carries a fixed 128-token padding and truncation; texts run one at a time
        # (see embed), unpadded, cut at the model's own limit.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=model.max_seq_length)

    def embed(self, texts: list[str], *, batch_size: int = 64) -> NDArray[np.float32]:
        """One run per text (`batch_size` is not used): dynamic quantisation scales the
        activations of each run as a whole, so in a batch a text's vector would depend on its
        neighbours and its padding. Alone, the same text always gets the same vector, and it
        measured no slower than batches of 16 or 64 on two cores (no padding to compute)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(texts)):
            columns = {
                "input_ids": encoding.ids,
                "attention_mask": encoding.attention_mask,
                "token_type_ids": encoding.type_ids,
            }
            feed = {name: np.asarray([columns[name]], dtype=np.int64) for name in self._inputs}
            out[row] = self._session.run(None, feed)[0][0]
        return out
