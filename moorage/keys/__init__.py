"""The control plane's keyring and every value sealed under it (``moorage keys``).

- :mod:`.keyring`: which keys the control plane holds (``MOORAGE_KEYS`` or the key file),
  and sealing and opening with them;
- :mod:`.fields`: :class:`~.fields.SealedTextField`, the column type of every sealed value;
- :mod:`.registry`: the one list of sealed fields (invariant I11), each with the associated
  data its values are bound to;
- :mod:`.services`: rotating and retiring keys, and counting what each key seals.

The cryptography itself is :mod:`moorage.sealing`, which knows nothing of Django.
"""
