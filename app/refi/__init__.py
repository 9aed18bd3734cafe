"""REFI-QDA exchange with QDA programs (QualCoder, MAXQDA, ATLAS.ti, NVivo): codebooks as
`.qdc`, projects as `.qdpx`, both ways, validated against the standard's schemas."""
