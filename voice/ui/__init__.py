"""The terminal call screen (``voice ui``, textual): home, incoming call, in call, end.

:mod:`voice.ui.view` turns what a call and the contact book know into the text the screens
show (pure, tested without a terminal); :mod:`voice.ui.screens` only lays that text out and
binds the keys; :mod:`voice.ui.app` runs the screens against one logged-in phone;
:mod:`voice.ui.meter` measures the audio levels; :mod:`voice.ui.shell` opens the phone for the
command line. Nothing here logs a key, a SAS or audio.
"""
