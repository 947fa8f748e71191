"""Pure detectors: reference and current data in, a typed result out. No I/O, no clock."""
