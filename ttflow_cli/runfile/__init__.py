"""Run files and sample files: HDF5 files that contain every array of a run, with no pickles."""

from ttflow_cli.runfile.io import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SAMPLES_FORMAT_NAME,
    RunData,
    append_samples,
    check_destination,
    read_run,
    read_samples,
    update_run,
    write_run,
    write_samples,
)
from ttflow_cli.runfile.tree import (
    flatten_state_dict,
    read_tree,
    unflatten_state_dict,
    write_tree,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SAMPLES_FORMAT_NAME",
    "RunData",
    "append_samples",
    "check_destination",
    "flatten_state_dict",
    "read_run",
    "read_samples",
    "read_tree",
    "unflatten_state_dict",
    "update_run",
    "write_run",
    "write_samples",
    "write_tree",
]
