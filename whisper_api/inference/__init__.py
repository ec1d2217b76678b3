"""Inference: turning a clip's samples into a transcript.

This package owns everything between the decoded audio and the typed `Transcript`: where the
speech is (vad.py), how a long clip is cut into chunks the model can take (chunks.py), loading
the model on its device, the decoding loop and the long-form strategies on top of them. Nothing
here knows about HTTP.
"""
