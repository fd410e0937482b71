"""Box and aspect-ratio maths (numpy/torch only): formats, IoU, fitting, rounding, label layout."""
