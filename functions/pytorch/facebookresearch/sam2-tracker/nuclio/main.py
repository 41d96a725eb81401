from common.entry import make_entry
from model_handler import ModelHandler

init_context, handler = make_entry(ModelHandler)
