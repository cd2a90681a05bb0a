from .encoders import *
