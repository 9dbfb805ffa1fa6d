"""Models and the task heads (loss, accuracy) that train them."""
from fedpriv.models.cnn import CNN
from fedpriv.models.lstm import CharLSTM
from fedpriv.models.registry import MODELS, Task, make_task
from fedpriv.models.transformer import CharTransformer
