"""The Kubernetes API server for ipamd: an async client, a watch-fed cache, and the writes.

Why ``lightkube``: it is small (a few thousand lines, pure Python), typed, async, built on
httpx, and brings what a client needs and nothing more: kubeconfig and in-cluster
configuration (service-account token re-read on a 401, as client-go's token file source,
the CA, ``KUBERNETES_SERVICE_HOST``), typed core resources, generic resources for CRDs
(ENIConfig, CNINode), merge patches and chunked lists with their resourceVersion. The
official ``kubernetes`` client is large, generated and synchronous (its asyncio twin is a
separate project); ``kr8s`` pulls more in for little here.

What lightkube cannot do, so this package does it on the httpx client lightkube's own
configuration code builds (:func:`lightkube.config.client_adapter.AsyncClient`): watches.
lightkube's ``watch`` cannot ask for bookmarks (``allowWatchBookmarks``), restarts from
"now" on 410 Gone (skipping the relist an informer needs, so changes made meanwhile would
be lost), and has no read deadline (a half-open connection would hang it forever).
:meth:`backends.kubernetes.client.LightkubeApi.watch` streams the watch itself.

Modules: ``settings`` (the environment the daemon passes in), ``client`` (the
:class:`ipamcore.kube.KubeApiPort` implementation), ``informer`` (reflectors and the cache),
``watcher`` (:class:`KubeWatcher`, the component the daemon starts).
"""
