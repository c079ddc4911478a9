/**
 * A local stand-in for the Hugging Face Hub (node:http on 127.0.0.1, random port) serving
 * repositories in the Hub's URL layout, as far as `@huggingface/hub` uses it:
 *   GET  /api/{models|datasets}/{repo}/revision/{rev}   repo info with `sha`
 *   GET  /api/{models|datasets}/{repo}/tree/{rev}?recursive=true
 *   POST /api/{models|datasets}/{repo}/paths-info/{rev}
 *   GET  /{repo}/resolve/{rev}/{file}, /datasets/{repo}/resolve/{rev}/{file}  (Range: bytes=0-0 probes)
 * A private repository answers 401 unless `Authorization: Bearer <token>` matches.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  type: 'model' | 'dataset';
  id: string;
  commit: string;
  files: Record<string, Buffer>;
  token?: string;
}

export interface FakeHub {
  url: string;
  /** Every request as "METHOD path". */
  requests: string[];
  close(): Promise<void>;
}

const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

export async function startFakeHub(repos: FakeRepo[]): Promise<FakeHub> {
  const requests: string[] = [];
  const find = (type: string, id: string) => repos.find((r) => r.type === type && r.id === id);
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = decodeURIComponent(url.pathname);
    requests.push(`${req.method} ${path}`);
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    const authorized = (repo: FakeRepo) => repo.token === undefined || req.headers.authorization === `Bearer ${repo.token}`;
    const api = /^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/(revision|tree|paths-info)\/([^/]+)$/.exec(path);
    if (api !== null) {
      const repo = find(api[1].slice(0, -1), api[2]);
      if (repo === undefined) return json(404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      if (!authorized(repo)) return json(401, { error: 'Invalid credentials' });
      if (api[4] !== 'main' && api[4] !== repo.commit) return json(404, { error: 'Revision not found' }, { 'X-Error-Code': 'RevisionNotFound' });
      const entries = Object.entries(repo.files).map(([p, b]) => ({ type: 'file', path: p, oid: gitOid(b), size: b.length }));
      if (api[3] === 'revision') return json(200, { _id: `id-${repo.id}`, id: repo.id, sha: repo.commit, private: repo.token !== undefined, lastModified: '2025-01-01T00:00:00.000Z', siblings: entries.map((e) => ({ rfilename: e.path })) });
      if (api[3] === 'tree') return json(200, entries);
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const wanted = (JSON.parse(body) as { paths: string[] }).paths;
        json(200, entries.filter((e) => wanted.includes(e.path)).map((e) => ({ ...e, lastCommit: { id: repo.commit, title: 'add', date: '2025-01-01T00:00:00.000Z' } })));
      });
      return;
    }
    const file = /^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (file !== null) {
      const repo = find(file[1] ? 'dataset' : 'model', file[2]);
      if (repo === undefined) return json(404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      if (!authorized(repo)) return json(401, { error: 'Invalid credentials' });
      const data = repo.files[file[4]];
      if (data === undefined) return json(404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      const headers = { ETag: `"${gitOid(data)}"`, 'X-Repo-Commit': repo.commit, 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes' };
      const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      if (range !== null) {
        const from = Number(range[1]);
        const to = Math.min(Number(range[2]), data.length - 1);
        res.writeHead(206, { ...headers, 'Content-Range': `bytes ${from}-${to}/${data.length}`, 'Content-Length': String(to - from + 1) });
        return res.end(data.subarray(from, to + 1));
      }
      res.writeHead(200, { ...headers, 'Content-Length': String(data.length) });
      return res.end(data);
    }
    json(404, { error: 'not found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
