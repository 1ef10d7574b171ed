"""SavedModel serving signatures (TF Serving) and TFLite conversion.

`keras_rec.export.testing` holds the parity checks that model tests reuse;
it is not imported here (it imports the LiteRT interpreter lazily).
"""

from keras_rec.export.saved_model import export_saved_model, load_serving
from keras_rec.export.tflite import export_tflite

__all__ = ["export_saved_model", "export_tflite", "load_serving"]
