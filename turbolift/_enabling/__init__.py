"""Switching distribution on: the command line's run, the ``.pth``/sitecustomize
hook (``site``), configuration (``config``), the ``sys.meta_path`` hook for
``--remote`` names (``hook``), running ``__main__`` (``main``), and the switch
itself (``switch``), which wires the caller side into the runtime.
"""
