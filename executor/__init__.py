"""Running a split plan: stage sub-models, pipelined workers, measured vs planned."""
