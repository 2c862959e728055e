"""Files: images in and out, atomic writes, input folders, records and replay."""
