"""Cloud providers behind one small interface (create a VM with user-data, delete, list by
label, status): the drivers, each with its stand-in for tests. May import identity, storage,
demand."""
