"""Images in: files, folders, bundled samples."""

from .files import array_to_tensor, list_images, load_image, resize_center_crop, stack_images
from .samples import SAMPLE_NAMES, sample_image, sample_images

__all__ = ["SAMPLE_NAMES", "array_to_tensor", "list_images", "load_image", "resize_center_crop",
           "sample_image", "sample_images", "stack_images"]
