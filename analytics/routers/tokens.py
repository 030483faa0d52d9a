"""/analytics/tokens: a logged-in user's own API tokens (issue, list, revoke).

Session only, with CSRF: a token cannot mint or revoke tokens, so a leaked one cannot renew
itself.
"""

from django.shortcuts import get_object_or_404
from ninja import Router, Status

from ..auth import READ_METADATA, SessionAuth
from ..models import ApiToken
from ..schemas import NewToken, TokenIn, TokenOut

router = Router(tags=["tokens"], auth=SessionAuth(READ_METADATA))


@router.get("/tokens", response=list[TokenOut], summary="Your API tokens")
def list_tokens(request):
    return list(ApiToken.objects.filter(user=request.auth))


@router.post("/tokens", response={201: NewToken}, summary="Issue an API token for yourself")
def issue_token(request, payload: TokenIn):
    token, secret = ApiToken.issue(request.auth, payload.name, payload.expires_at)
    return Status(201, {**TokenOut.from_orm(token).model_dump(), "token": secret})


@router.delete("/tokens/{token_id}", response={204: None}, summary="Revoke one of your tokens")
def revoke_token(request, token_id: int):
    get_object_or_404(ApiToken, pk=token_id, user=request.auth).revoke()
    return Status(204, None)
