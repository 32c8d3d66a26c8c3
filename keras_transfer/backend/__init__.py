"""Backend-specific training steps (private): the one place the library imports
a backend. Import a submodule only when its backend is the active one."""
