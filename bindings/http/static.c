/*
 * static.c - the files compiled into the binary: for now a placeholder
 * dashboard page that logs in and lists the directory (the real dashboard
 * is its own issue). Public: the page holds no data; it asks for a login
 * and then calls the authenticated API like any other client.
 */
#include "http_int.h"

#include <string.h>

static const char index_html[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>twind</title>\n<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;"
    "text-align:left}code{font-size:90%}</style></head><body>\n"
    "<h1>twind</h1>\n<p>Store-and-forward digital twin runtime. The directory of Things:</p>\n"
    "<form id=\"login\"><input id=\"u\" placeholder=\"login\" autocomplete=\"username\"> "
    "<input id=\"p\" type=\"password\" placeholder=\"password\" autocomplete=\"current-password\"> "
    "<button>Log in</button></form>\n<p id=\"msg\"></p>\n"
    "<table id=\"things\" hidden><thead><tr><th>id</th><th>title</th><th>properties</th>"
    "<th>actions</th><th>events</th></tr></thead><tbody></tbody></table>\n"
    "<script>\n"
    "const $=s=>document.querySelector(s);\n"
    "function text(v){return document.createTextNode(v==null?'':String(v));}\n"
    "async function list(tok){\n"
    " const r=await fetch('/things',{headers:{Authorization:'Bearer '+tok}});\n"
    " if(!r.ok){$('#msg').textContent='error '+r.status;return;}\n"
    " const tds=await r.json(),tb=$('#things tbody');tb.textContent='';\n"
    " for(const td of tds){const tr=document.createElement('tr');\n"
    "  for(const v of [td.id,td.title,Object.keys(td.properties||{}).join(', '),"
    "Object.keys(td.actions||{}).join(', '),Object.keys(td.events||{}).join(', ')]){"
    "const c=document.createElement('td');c.appendChild(text(v));tr.appendChild(c);}\n"
    "  tb.appendChild(tr);}\n"
    " $('#things').hidden=false;$('#msg').textContent=tds.length+' Things';}\n"
    "$('#login').onsubmit=async e=>{e.preventDefault();\n"
    " const r=await fetch('/authn/login',{method:'POST',headers:{'Content-Type':"
    "'application/json'},body:JSON.stringify({login:$('#u').value,password:$('#p').value})});\n"
    " if(!r.ok){$('#msg').textContent='login failed ('+r.status+')';return;}\n"
    " const j=await r.json();sessionStorage.setItem('tw',j.token);list(j.token);};\n"
    "const t=sessionStorage.getItem('tw');if(t)list(t);\n"
    "</script></body></html>\n";

enum MHD_Result http_static_route(http_req *r)
{
    if (strcmp(r->method, "GET") != 0 && !r->head) return http_reply_405(r, "GET, HEAD");
    if (r->nsegs == 0 || (r->nsegs == 1 && strcmp(r->segs[0], "index.html") == 0))
        return http_reply_bytes(r, 200, "text/html; charset=utf-8", index_html,
                                sizeof index_html - 1, false, "Cache-Control", "no-cache",
                                "Content-Security-Policy",
                                "default-src 'self'; script-src 'unsafe-inline' 'self'; "
                                "style-src 'unsafe-inline'",
                                NULL);
    return http_reply_code(r, TW_ENOTFOUND, "no such file");
}
