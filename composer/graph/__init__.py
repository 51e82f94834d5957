"""The graph compiler: checks and shape inference (``plan``), the size estimate (``size``) and
the compiled model (``model``). Specs live below it, in :mod:`composer.spec`. Import from the
submodules; this package stays import-light."""
