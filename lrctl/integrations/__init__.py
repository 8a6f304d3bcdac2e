"""The controller inside training frameworks: one module per framework, each imported only
when used (the framework is an optional extra).

- `lrctl.integrations.lightning.LRControllerCallback`: a Lightning `Callback`
  (`pip install "lrctl[lightning]"`).
- `lrctl.integrations.transformers.attach_controller`: the Hugging Face `Trainer`'s LR
  scheduler (`pip install "lrctl[transformers]"`).
"""
