from common.doors.nuclio import handle, init
from model_handler import ModelHandler
def init_context(context): init(context, ModelHandler)
def handler(context, event): return handle(context, event)
