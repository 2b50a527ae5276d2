"""Loudspeaker broadcasts (docs/broadcasts.md): the audio library and the broadcasts calendar."""
