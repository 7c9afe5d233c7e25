"""The studio's own browser code: the map sketch and the 3D world view (``gr.HTML`` components),
their JavaScript, and the vendored three.js + Spark bundle.

``assets/`` holds ES modules served by the studio itself under ``/loci/web/`` (see
:mod:`studio.web.routes`); ``vendor/`` has the pinned npm recipe that builds
``assets/vendor/loci3d.js``. Nothing here serves user data: stored files reach the browser
through the studio's key-checked file links.
"""
