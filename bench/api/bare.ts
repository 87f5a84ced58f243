/** The ceilings for bench/api/run.ts: a bare fastify app, nothing but a JSON GET and a JSON POST. */
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/bare', async () => ({ ok: true }));
app.post('/bare/:id', async (request) => ({ blocks: [{ index: (request.body as { count: number }).count, blockId: 1 }] }));
await app.listen({ host: '127.0.0.1', port: Number(process.argv[2]) });
