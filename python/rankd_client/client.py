"""The request builder and the blocking client of rankd_client.

A feature value is sparse when it is a string or a list/tuple of strings
(the values of a bag: SparseFeature.values), dense when it is an int or a
float or any numbers.Real such as numpy.float32 (the raw value:
DenseFeature.value; the server standardizes it). Names and string values
are checked here: str, no NUL (the server reads them as C strings and
would cut them there), valid UTF-8; a wrong type or value is a TypeError
or ValueError naming the argument (e.g. "candidates[1].genres"). The
request fields that are not features by name (User.user_id,
User.recent_item_ids, Candidate.ad_id, content_embedding, content_text) are
keyword arguments. Errors of the server are grpc.RpcError with the status
code and a message naming the field (e.g. INVALID_ARGUMENT
"candidates[2].sparse[0].name: unknown feature 'foo'").
"""
import numbers
import os
from collections.abc import Mapping

import grpc

from . import health_pb2, health_pb2_grpc, rank_pb2, rank_pb2_grpc

with open(os.path.join(os.path.dirname(__file__), "_version.txt")) as _f:
    __version__ = _f.read().strip()


def _text(s, what):
    """s, a str sent as a proto string: without NUL (the server reads C
    strings, so it would cut the text there) and encodable as UTF-8."""
    if not isinstance(s, str):
        raise TypeError("%s: %r is not a str" % (what, s))
    if "\x00" in s:
        raise ValueError("%s: %r contains NUL" % (what, s))
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("%s: %r is not valid UTF-8 text (%s)" % (what, s, e.reason)) from None
    return s


def _fill(msg, features, where):
    """Append features (dict name -> value) to msg.sparse / msg.dense in order."""
    if features is None:
        return
    if not isinstance(features, Mapping):
        raise TypeError("%s: want a dict of feature name -> value, got %s" % (where, type(features).__name__))
    for name, v in features.items():
        if not isinstance(name, str):
            raise TypeError("%s: feature name %r is not a string" % (where, name))
        _text(name, "%s: feature name" % where)
        what = "%s.%s" % (where, name)
        if isinstance(v, str):
            msg.sparse.add(name=name, values=[_text(v, what)])
        elif isinstance(v, (list, tuple)):
            if not all(isinstance(x, str) for x in v):
                raise TypeError("%s: sparse values must be strings, got %r" % (what, v))
            msg.sparse.add(name=name, values=[_text(x, what) for x in v])
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            try:
                value = float(v)
            except OverflowError:
                raise ValueError("%s: %r is too large for a float" % (what, v)) from None
            msg.dense.add(name=name, value=value)
        else:
            raise TypeError("%s: %r is neither sparse (str, list of str) nor dense (int, float)" % (what, v))


def _per_candidate(values, n, what):
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError("%s: %d values for %d candidates" % (what, len(values), n))
    return values


def build_request(user=None, candidates=(), *, user_id=None, recent_item_ids=None, ad_ids=None,
                  content_embeddings=None, content_texts=None, request_id="", model_name="",
                  model_version="", return_tower_scores=False, return_timing=False):
    """A rankd.v1.RankRequest of one user and len(candidates) candidates.

    user: dict feature -> value; candidates: list of such dicts; ad_ids,
    content_embeddings (lists of floats), content_texts (str or bytes):
    None or one per candidate."""
    if isinstance(candidates, (str, bytes, Mapping)):
        raise TypeError("candidates: want a list of dicts (one per candidate), got %s" % type(candidates).__name__)
    candidates = list(candidates)
    u = rank_pb2.User()
    if user_id is not None:
        u.user_id = _text(user_id, "user_id")
    if recent_item_ids is not None:
        u.recent_item_ids.extend(_text(x, "recent_item_ids[%d]" % k) for k, x in enumerate(recent_item_ids))
    _fill(u, user, "user")
    req = rank_pb2.RankRequest(request_id=request_id, model_name=model_name, model_version=model_version,
                               user=u, return_tower_scores=return_tower_scores, return_timing=return_timing)
    n = len(candidates)
    ads = _per_candidate(ad_ids, n, "ad_ids")
    embs = _per_candidate(content_embeddings, n, "content_embeddings")
    texts = _per_candidate(content_texts, n, "content_texts")
    for i, feats in enumerate(candidates):
        c = req.candidates.add()
        if ads[i] is not None:
            c.ad_id = _text(ads[i], "ad_ids[%d]" % i)
        if embs[i] is not None:
            c.content_embedding.extend(embs[i])
        if texts[i] is not None:
            if not isinstance(texts[i], (str, bytes)):
                raise TypeError("content_texts[%d]: %r is neither str nor bytes" % (i, texts[i]))
            c.content_text = _text(texts[i], "content_texts[%d]" % i).encode() if isinstance(texts[i], str) else texts[i]
        _fill(c, feats, "candidates[%d]" % i)
    return req


class Client:
    """A blocking client of one rankd server (HOST:PORT), over an insecure
    channel unless one is given. Use as a context manager or call close()."""

    def __init__(self, target, *, timeout=10.0, channel=None):
        self.timeout = timeout
        self.channel = channel if channel is not None else grpc.insecure_channel(target)
        self.ranker = rank_pb2_grpc.RankerStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def rank_request(self, req, timeout=None):
        """Send a RankRequest; the RankResponse."""
        return self.ranker.Rank(req, timeout=self.timeout if timeout is None else timeout)

    def rank(self, user, candidates, timeout=None, **kw):
        """pCTR per candidate, in order (build_request's arguments)."""
        resp = self.rank_request(build_request(user, candidates, **kw), timeout)
        return [s.pctr for s in resp.scores]

    def health(self, service="", timeout=None):
        """"SERVING" / "NOT_SERVING" / ... of service ("" = the server)."""
        r = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service),
                                   timeout=self.timeout if timeout is None else timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
