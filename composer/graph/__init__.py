"""Blueprint graphs: symbolic specs (``spec``), checks and shape inference (``plan``) and the
compiled model (``model``). Import from the submodules; this package stays import-light."""
