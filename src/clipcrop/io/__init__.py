"""Reading and writing pictures: image loading and limits, metadata, rendering, input expansion,
output names, atomic files, progress bars."""
