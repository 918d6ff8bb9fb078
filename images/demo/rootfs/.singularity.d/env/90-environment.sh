#!/bin/sh
# Environment of the rfake demo image, sourced before the command runs
# (Singularity/Apptainer convention for /.singularity.d/env/*.sh).
export RFAKE_DEMO=1
