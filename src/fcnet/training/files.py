"""Kept so that ``from fcnet.training import files`` (experiments/) still works: the
one atomic writer and its readers live in ``fcnet.files``."""

from fcnet.files import atomic_write, load_npz, read_json, save_npz, write_json, write_text

__all__ = ["atomic_write", "load_npz", "read_json", "save_npz", "write_json", "write_text"]
