"""The run contract: what the site (``client``) and the coordinator (``server``) both rely on.

Flower-free, and each module is importable on its own:

- :mod:`mpdrm.contract.names`   -- which names are site-local (the one ``personality.`` prefix), modes;
- :mod:`mpdrm.contract.keys`    -- record and metric keys of the messages, DP reply fields;
- :mod:`mpdrm.contract.sites`   -- site ids, cohort folders, derived seeds;
- :mod:`mpdrm.contract.schema`  -- the typed run configuration (the single source of its defaults);
- :mod:`mpdrm.contract.runconfig` -- the flat Flower run config derived from the schema, and its decoder;
- :mod:`mpdrm.contract.sharing` -- a site's model from the run config, and what of it may leave the site;
- :mod:`mpdrm.contract.site_data` -- a site's data from the run config (prepared clips, batches);
- :mod:`mpdrm.contract.pyproject` -- pyproject's ``[tool.flwr.app.config]``, generated from the schema.

``names``, ``keys`` and ``sites`` import neither torch nor the model: the strategies use them.
"""
