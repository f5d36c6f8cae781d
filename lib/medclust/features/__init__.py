"""Hand-crafted image features: Haralick GLCM texture, 3D-SIFT and bags of visual words."""
