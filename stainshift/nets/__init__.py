"""Network definitions shared by the translation models: generators, discriminators and their initialisation."""

from stainshift.nets.discriminators import PatchDiscriminator
from stainshift.nets.generators import ResnetGenerator, UnetGenerator, init_weights, norm_layer

__all__ = ["PatchDiscriminator", "ResnetGenerator", "UnetGenerator", "init_weights", "norm_layer"]
