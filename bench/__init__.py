"""Benchmarks. Our side runs in the bench's own process, with the C allocator set up as the
server sets it up (whisper_api/memory.py), so that the figures are the server's."""

from whisper_api.memory import configure_allocator

configure_allocator()
