from common.doors.cvat.nuclio import make_entry
from model_handler import ModelHandler

init_context, handler = make_entry(ModelHandler)
