"""Data sets (``sets``) and the image formats they read (``formats``); new ones register as plugins."""
